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
 * partial index of open steps once per step. `everyLease`: every claim is taken back, ended or not, as a
 * sole worker does at its start (takeOverLeftClaims): whatever holds one is a process that ended.
 */
export async function reapExpiredLeases(db: DB, now: Date, limit = 500, options: { everyLease?: boolean } = {}): Promise<number> {
  const { rows } = await sql<{ id: string }>`
    with expired as (
      select tenant_id, id, step_id from deliveries
      where status = 'running' and ${options.everyLease ? sql`true` : sql`lease_expires_at < ${now}`}
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

/**
 * Takes back every claim, of deliveries and of mails, for a worker that is the only one there can be
 * (the embedded database, which one process holds): whatever holds a claim at its start is a process
 * that ended (a crash, a kill), and its calls need not wait out their leases (60 s by default). The
 * deliveries go back as the reaper sends them back, each with an `aborted` attempt; the mails go back
 * as they were, their attempt counted. Returns how many of each.
 */
export async function takeOverLeftClaims(db: DB, now: Date): Promise<{ deliveries: number; mails: number }> {
  let deliveries = 0
  for (let taken = await reapExpiredLeases(db, now, 500, { everyLease: true }); taken > 0; taken = await reapExpiredLeases(db, now, 500, { everyLease: true })) {
    deliveries += taken
  }
  const mails = await db.updateTable('outbox_mails').set({ lease_expires_at: null })
    .where('lease_expires_at', 'is not', null).where('sent_at', 'is', null).where('failed_at', 'is', null).executeTakeFirst()
  return { deliveries, mails: Number(mails.numUpdatedRows) }
}
