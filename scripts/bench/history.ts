// `--history N` of the scheduler benchmark: N finished processes of another tenant, each with what
// a real one leaves behind (its done webhook step, the succeeded delivery and its attempt, three
// activities), inserted with generate_series in chunks, triggers and foreign-key checks off, and
// NOT analyzed afterwards: the burst that follows meets statistics that know nothing of them, as a
// production burst below autovacuum's threshold would.
//
// The history tenant's id is random (v4), so it almost always sorts after the bench's tenant, whose
// id is time-ordered (v7, as every id Baton makes). Its rows then sit to the right of the bench
// tenant's in every index that leads with tenant_id (the primary keys among them), and the bench
// tenant's inserts no longer land on an index's rightmost page, where Postgres skips the descent from
// the root (nbtree's fastpath): a cost of a second tenant's keys, not of how many rows it holds. With
// BENCH_HISTORY_TENANT=first the history tenant's id sorts first, and the bench tenant stays on the
// right as on an empty database: the comparison then weighs the history's size alone (docs/performance.md).
import { randomUUID } from 'node:crypto'
import type pg from 'pg'
import { log, uuid7 } from './lib.js'

const CHUNK = 100_000

export async function seedHistory(db: pg.Client, serviceId: string, count: number): Promise<number> {
  const started = Date.now()
  const first = process.env.BENCH_HISTORY_TENANT === 'first'
  const tenantId = first ? `00000000${randomUUID().slice(8)}` : randomUUID()
  log(`history: tenant ${tenantId}${first ? ' (sorts before every other tenant: BENCH_HISTORY_TENANT=first)' : ''}`)
  const userId = randomUUID()
  const templateId = randomUUID()
  await db.query(`insert into tenants (id, name, web_id) values ($1, 'History GmbH', $2)`, [tenantId, `history${Date.now()}`])
  await db.query(`insert into users (tenant_id, id, name, email) values ($1, $2, 'Old Hand', 'old@example.com')`, [tenantId, userId])
  await db.query(`insert into process_templates (tenant_id, id, name, active, controller_user_id) values ($1, $2, 'Long done', true, $3)`, [tenantId, templateId, userId])
  await db.query('set session_replication_role = replica')
  try {
    for (let done = 0; done < count; done += CHUNK) {
      const n = Math.min(CHUNK, count - done)
      await db.query(`
        with src as materialized (
          select g, now() - (1 + random() * 59) * interval '1 day' as ended,
            ${uuid7('now()')} as instance_id, ${uuid7('now()')} as step_id, ${uuid7('now()')} as delivery_id,
            ${uuid7('now()')} as attempt_id, ${uuid7('now()')} as a1, ${uuid7('now()')} as a2, ${uuid7('now()')} as a3
          from generate_series(1, $4::int) g
        ), instances as (
          insert into process_instances (tenant_id, id, template_id, template_name, status, responsible_user_id, controller_user_id,
            notify_on_completion, current_position, version, started_at, ended_at, created_at, updated_at)
          select $1, instance_id, $2, 'Long done', 'completed', $3, $3, false, 1, 3, ended - interval '1 minute', ended, ended, ended from src
        ), steps as (
          insert into instance_steps (tenant_id, id, instance_id, position, kind, name, start_mode, responsibility, service_id,
            refers_to_property, refers_to_address, parameters, state, assignee_user_id, start_at, started_at, ended_at, version)
          select $1, step_id, instance_id, 1, 'webhook', 'Re-value', 'afterPrevious', 'processResponsible', $5, false, false, '{}', 'done', $3,
            ended - interval '1 minute', ended - interval '1 minute', ended, 3 from src
        ), deliveries as (
          insert into deliveries (tenant_id, id, service_id, source, instance_id, step_id, status, attempt_count, next_attempt_at,
            fence, last_status_code, created_at, finished_at)
          select $1, delivery_id, $5, 'step', instance_id, step_id, 'succeeded', 1, ended - interval '1 minute', 1, 200, ended, ended from src
        ), attempts as (
          insert into delivery_attempts (tenant_id, id, delivery_id, round, attempt_number, started_at, duration_ms, outcome, status_code, response_body)
          select $1, attempt_id, delivery_id, 1, 1, ended, 25, 'succeeded', 200, 'ok' from src
        ), activities as (
          insert into activities (tenant_id, id, kind, message, instance_id, step_id, data, created_at)
          select $1, a1, 'processStarted', 'Process "Long done" started.', instance_id, null::uuid, '{}'::jsonb, ended from src
          union all select $1, a2, 'stepDone', 'Step "Re-value" done.', instance_id, step_id, '{}'::jsonb, ended from src
          union all select $1, a3, 'processCompleted', 'Process "Long done" completed.', instance_id, null::uuid, '{}'::jsonb, ended from src
        )
        select count(*) from src
      `, [tenantId, templateId, userId, n, serviceId])
      log(`history: ${done + n} of ${count} finished processes seeded`)
    }
  } finally {
    await db.query('reset session_replication_role')
  }
  // The seeding's gigabyte of WAL sets off checkpoints that would still be writing its pages while
  // the burst runs, which the run on an empty database never meets: the history is flushed first.
  // A checkpoint writes pages, it does not analyze: the statistics still know nothing of the rows.
  log('history: checkpoint')
  await db.query('checkpoint').catch((error: Error) => log(`history: no checkpoint (${error.message}); the burst may meet one`))
  return Date.now() - started
}
