import { sql } from '../../db/kysely.js'
import type { DB } from '../../db/connect.js'
import type { QueueFigures } from '../../lib/metrics.js'

/**
 * The database answers, and takes writes: a connection whose transactions are read-only (a standby a
 * failover left DATABASE_URL pointing at, default_transaction_read_only) fails with the server's own
 * 25006, as a write on it would, so the pool replaces it; a read-only connection the probe kept
 * reusing kept the process unready once the database took writes again.
 */
export async function pingDatabase(db: DB): Promise<void> {
  await sql`do $$ begin
    if current_setting('transaction_read_only') = 'on' then
      raise exception 'the database takes no writes (read-only)' using errcode = 'read_only_sql_transaction';
    end if;
  end $$`.execute(db)
}

/**
 * The statement of queueFigures: each count reads a partial index over open rows, so a scrape costs as
 * much as the open work, whatever the history (test/db/foreign-key-plans.test.ts).
 */
export function queueFiguresStatement(now: Date) {
  return sql<{
    pending: string; due: string; running: string; oldest_due: Date | null; unsent: string
    waiting_steps: string; due_steps: string; running_steps: string; failed_steps: string
  }>`
    select
      (select count(*) from deliveries where status = 'pending') as pending,
      (select count(*) from deliveries where status = 'pending' and next_attempt_at <= ${now}) as due,
      (select count(*) from deliveries where status = 'running') as running,
      (select min(next_attempt_at) from deliveries where status = 'pending') as oldest_due,
      (select count(*) from outbox_mails where sent_at is null and failed_at is null) as unsent,
      (select count(*) from instance_steps where state = 'waiting') as waiting_steps,
      (select count(*) from instance_steps where state = 'due') as due_steps,
      (select count(*) from instance_steps where state = 'running') as running_steps,
      (select count(*) from instance_steps where state = 'failed') as failed_steps
  `
}

/** Sizes of the scheduler's queues and the open steps. */
export async function queueFigures(db: DB, now: Date): Promise<QueueFigures> {
  const { rows } = await queueFiguresStatement(now).execute(db)
  const row = rows[0]!
  return {
    pendingDeliveries: Number(row.pending),
    dueDeliveries: Number(row.due),
    runningDeliveries: Number(row.running),
    oldestDueAt: row.oldest_due && row.oldest_due <= now ? new Date(row.oldest_due) : null,
    steps: { waiting: Number(row.waiting_steps), due: Number(row.due_steps), running: Number(row.running_steps), failed: Number(row.failed_steps) },
    unsentMails: Number(row.unsent)
  }
}
