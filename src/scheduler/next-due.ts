import { sql } from 'kysely'
import type { DB } from '../db/connect.js'

/** The earliest time any duty has work, read from the partial indexes; undefined when idle. */
export async function nextDueAt(db: DB): Promise<Date | undefined> {
  const { rows } = await sql<{ next: Date | null }>`
    select least(
      (select min(next_attempt_at) from deliveries where status = 'pending'),
      (select min(start_at) from instance_steps where state = 'waiting'),
      (select min(deadline_at) from instance_steps
        where deadline_at is not null and deadline_notified_at is null and state in ('due', 'running', 'failed')),
      (select min(next_attempt_at) from outbox_mails where sent_at is null)
    ) as next
  `.execute(db)
  return rows[0]?.next ?? undefined
}
