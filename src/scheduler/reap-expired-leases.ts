import { sql } from '../db/kysely.js'
import type { DB } from '../db/connect.js'

/**
 * Deliveries whose worker vanished (its lease ran out) go back to pending, with an `aborted` attempt
 * row saying so, counted like any attempt; their steps return to `due`. Each keeps the due time it
 * was claimed at, and so its place at the head of the queue: behind a backlog, a due time of now
 * had a killed claim wait for everything that fell due during its lease (the kill drill, on a busy
 * machine: called 33 s after the reap). Claimed rows are skipped, so
 * reapers in many workers do not clash. The steps are found as a claim's are (claimStatement): by
 * their primary key, or in one pass where the planner believes the table small, never by walking the
 * partial index of open steps once per step.
 */
export async function reapExpiredLeases(db: DB, now: Date, limit = 500): Promise<number> {
  const { rows } = await sql<{ id: string }>`
    with expired as (
      select tenant_id, id, step_id from deliveries
      where status = 'running' and lease_expires_at < ${now}
      limit ${limit}
      for update skip locked
    ), released as (
      update deliveries d
      set status = 'pending', lease_owner = null, lease_expires_at = null,
          last_error = 'the worker holding this delivery stopped before it finished'
      from expired e
      where d.tenant_id = e.tenant_id and d.id = e.id
      returning d.tenant_id, d.id, d.step_id, d.round, d.attempt_count, d.lease_expires_at
    ), logged as (
      insert into delivery_attempts (tenant_id, id, delivery_id, round, attempt_number, started_at, duration_ms, outcome, error)
      select tenant_id, gen_random_uuid(), id, round, attempt_count, ${now}, 0, 'aborted',
        'lease expired: the worker stopped, or lost the database, before recording an outcome; the call may have reached the provider'
      from released
    ), due_again as (
      update instance_steps st set state = 'due'
      from (select e.tenant_id, e.step_id, 'running'::text as running from expired e where e.step_id is not null limit ${sql.lit(Math.max(1, Math.floor(limit)))}) k
      where st.tenant_id = k.tenant_id and st.id = k.step_id and st.state = k.running
    )
    select id from released
  `.execute(db)
  return rows.length
}
