import { sql } from '../db/kysely.js'
import type { DB } from '../db/connect.js'
import { tenantNotDeleting } from './tenant-not-deleting.js'

/**
 * When the next delivery falls due, and when the next chore (step start, automatic step, deadline, mail) does. A mail
 * another worker holds counts from the end of its lease, so a worker does not spin on it. Nor does it spin on the rows
 * of a tenant being deleted (tenants.deleting_since), which the claims and chores do not take (tenant-not-deleting.ts):
 * counted, they were due at once for as long as the deletion ran, or until it was repeated once cut off, and the loop
 * claimed nothing and ran its chores every 50 ms. Each time is read along its partial index, the first row whose
 * tenant is not being deleted (the tenants being deleted read once for the statement), rather than by `min`, which
 * would read them all. The mails are read in two parts: those no worker holds by their next attempt, and those held by
 * the end of their lease, which a claim sets later than the next attempt and every outcome clears (migration 0040).
 * The next end of a delivery's lease is a chore's too (the reaper's, as any tenant's): without it a claim a killed
 * worker left waited for the poll interval, up to 10 minutes, where README promises its take-over when the lease ends.
 * Only a lease ending from `leasesFrom` on counts, the start of this worker's last reap: one that ended before was that
 * reap's to take, and one it could not take (its row locked by another transaction, or the reap failed) kept the loop
 * running its chores every 50 ms as long.
 */
function nextDueStatement(leasesFrom: Date) {
  return sql<{ delivery: Date | null; chores: Date | null }>`
    select (select next_attempt_at from deliveries d where status = 'pending' and ${tenantNotDeleting('d.tenant_id')}
        order by next_attempt_at limit 1) as delivery, least(
      (select start_at from instance_steps s where state = 'waiting' and ${tenantNotDeleting('s.tenant_id')}
        order by start_at limit 1),
      (select start_at from instance_steps s where state = 'due' and automatic and ${tenantNotDeleting('s.tenant_id')}
        order by start_at limit 1),
      (select deadline_at from instance_steps s
        where deadline_at is not null and deadline_notified_at is null and state in ('due', 'running', 'failed')
          and ${tenantNotDeleting('s.tenant_id')}
        order by deadline_at limit 1),
      (select next_attempt_at from outbox_mails m
        where sent_at is null and failed_at is null and lease_expires_at is null and ${tenantNotDeleting('m.tenant_id')}
        order by next_attempt_at limit 1),
      (select greatest(next_attempt_at, lease_expires_at) from outbox_mails m
        where lease_expires_at is not null and sent_at is null and failed_at is null and ${tenantNotDeleting('m.tenant_id')}
        order by lease_expires_at limit 1),
      (select lease_expires_at from deliveries where status = 'running' and lease_expires_at >= ${leasesFrom}
        order by lease_expires_at limit 1)
    ) as chores
  `
}

export async function nextDue(db: DB, leasesFrom = new Date(0)): Promise<{ delivery: Date | undefined; chores: Date | undefined }> {
  const { rows } = await nextDueStatement(leasesFrom).execute(db)
  return { delivery: rows[0]?.delivery ?? undefined, chores: rows[0]?.chores ?? undefined }
}
