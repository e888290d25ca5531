import { sql, type RawBuilder } from '../db/kysely.js'
import type { DB } from '../db/connect.js'

const DAY_MS = 86_400_000

/**
 * Removes finished data older than the retention: processes that ended (with their steps, deliveries,
 * attempts and activities), finished deliveries of record triggers (with their attempts) and sent
 * mails (and email steps' mails that were given up), at most `limit` rows of each per call, each found through a partial index over finished
 * rows. Rows another worker is removing are skipped. Returns how many rows went.
 */
export async function removeOldHistory(db: DB, now: Date, retentionDays: number, limit = 500): Promise<number> {
  if (retentionDays <= 0) return 0
  const cutoff = new Date(now.getTime() - retentionDays * DAY_MS)
  const { rows: processes } = await sql<{ id: string }>`
    with old as (
      select tenant_id, id from process_instances
      where status <> 'running' and ended_at < ${cutoff}
      order by ended_at
      limit ${limit}
      for update skip locked
    ), their_activities as (
      delete from activities a using old o where a.tenant_id = o.tenant_id and a.instance_id = o.id
    )
    delete from process_instances p using old o where p.tenant_id = o.tenant_id and p.id = o.id
    returning p.id
  `.execute(db)
  const deliveries = await removeOldRows(db, 'deliveries',
    sql`step_id is null and status in ('succeeded', 'failed', 'cancelled') and finished_at < ${cutoff}`, 'finished_at', limit)
  // A mail its email step has not heard of yet (after a long downtime) stays until it has.
  const mails = await removeOldRows(db, 'outbox_mails', sql`sent_at is not null and sent_at < ${cutoff} and not settle_step`, 'sent_at', limit)
  // An email step's mail that was given up (migration 0010), once its step has heard of it.
  const givenUp = await removeOldRows(db, 'outbox_mails', sql`failed_at is not null and failed_at < ${cutoff} and not settle_step`, 'failed_at', limit)
  return processes.length + deliveries + mails + givenUp
}

/** Deletes up to `limit` rows of `table` that are `old`, oldest `by` first, skipping rows others hold; returns how many. */
async function removeOldRows(db: DB, table: 'deliveries' | 'outbox_mails', old: RawBuilder<unknown>, by: string, limit: number): Promise<number> {
  const { rows } = await sql<{ id: string }>`
    with old as (
      select tenant_id, id from ${sql.table(table)}
      where ${old}
      order by ${sql.ref(by)}
      limit ${limit}
      for update skip locked
    )
    delete from ${sql.table(table)} t using old o where t.tenant_id = o.tenant_id and t.id = o.id
    returning t.id
  `.execute(db)
  return rows.length
}
