import { sql } from 'kysely'
import type { DB } from '../../db/connect.js'

export async function pingDatabase(db: DB): Promise<void> {
  await sql`select 1`.execute(db)
}

export interface QueueFigures {
  pendingDeliveries: number
  dueDeliveries: number
  runningDeliveries: number
  oldestDueAt: Date | null
  waitingSteps: number
  unsentMails: number
}

/** Sizes of the scheduler's queues, each read from a partial index over open rows. */
export async function queueFigures(db: DB, now: Date): Promise<QueueFigures> {
  const { rows } = await sql<{
    pending: string; due: string; running: string; oldest_due: Date | null; waiting: string; unsent: string
  }>`
    select
      (select count(*) from deliveries where status = 'pending') as pending,
      (select count(*) from deliveries where status = 'pending' and next_attempt_at <= ${now}) as due,
      (select count(*) from deliveries where status = 'running') as running,
      (select min(next_attempt_at) from deliveries where status = 'pending') as oldest_due,
      (select count(*) from instance_steps where state = 'waiting') as waiting,
      (select count(*) from outbox_mails where sent_at is null) as unsent
  `.execute(db)
  const row = rows[0]!
  return {
    pendingDeliveries: Number(row.pending),
    dueDeliveries: Number(row.due),
    runningDeliveries: Number(row.running),
    oldestDueAt: row.oldest_due && row.oldest_due <= now ? new Date(row.oldest_due) : null,
    waitingSteps: Number(row.waiting),
    unsentMails: Number(row.unsent)
  }
}
