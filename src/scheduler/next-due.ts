import { sql } from '../db/kysely.js'
import type { DB } from '../db/connect.js'

/**
 * When the next delivery falls due, and when the next chore (step start, automatic step, deadline, mail) does. A mail
 * another worker holds counts from the end of its lease, so a worker does not spin on it.
 */
export async function nextDue(db: DB): Promise<{ delivery: Date | undefined; chores: Date | undefined }> {
  const { rows } = await sql<{ delivery: Date | null; chores: Date | null }>`
    select (select min(next_attempt_at) from deliveries where status = 'pending') as delivery, least(
      (select min(start_at) from instance_steps where state = 'waiting'),
      (select min(start_at) from instance_steps where state = 'due' and automatic),
      (select min(deadline_at) from instance_steps
        where deadline_at is not null and deadline_notified_at is null and state in ('due', 'running', 'failed')),
      (select min(greatest(next_attempt_at, lease_expires_at)) from outbox_mails where sent_at is null and failed_at is null)
    ) as chores
  `.execute(db)
  return { delivery: rows[0]?.delivery ?? undefined, chores: rows[0]?.chores ?? undefined }
}
