import type { DB } from '../db/connect.js'
import { isTransientDatabaseError } from '../db/errors.js'
import type { Logger } from '../lib/logger.js'
import { deleteTenant, tenantsMarkedSince } from '../modules/tenants/repository.js'
import type { RowErrorHandler } from './isolated.js'

/**
 * How long a tenant stays marked as being deleted before a worker takes its deletion as cut off and
 * finishes it. A `DELETE /v1/tenants/{id}` deletes while its request lasts: a million rows go in
 * well under a minute, so a deletion still marked after this long was left by a restart, a crash or a
 * 503. One still going meanwhile is not harmed: its parts and the worker's take turns
 * (src/modules/tenants/repository.ts), and whichever ends last finds the tenant gone.
 */
export const DELETION_LEFT_AFTER_MS = 600_000

/** Tenants one pass takes at most; the next pass takes the rest. */
const TENANTS_A_PASS = 10

/**
 * Finishes the deletions of tenants marked at least DELETION_LEFT_AFTER_MS before `now`, oldest first;
 * returns how many tenants went. A tenant whose deletion fails on its own (not the database going
 * away) is reported and the others go on; it is tried again on a later pass. `skip`: tenants to leave
 * out (those whose deletion failed lately). `signal` stops the pass between two parts of a deletion.
 */
export async function finishTenantDeletions(
  db: DB, now: Date, options: { signal?: AbortSignal; onError: RowErrorHandler; log?: Pick<Logger, 'info'>; skip?: readonly string[] }
): Promise<number> {
  const left = await tenantsMarkedSince(db, new Date(now.getTime() - DELETION_LEFT_AFTER_MS), TENANTS_A_PASS, options.skip ?? [])
  let deleted = 0
  for (const tenant of left) {
    if (options.signal?.aborted) break
    try {
      if (!(await deleteTenant(db, tenant.id, options.signal))) continue
    } catch (error) {
      if (options.signal?.aborted || isTransientDatabaseError(error)) throw error
      options.onError(error, tenant.id)
      continue
    }
    deleted += 1
    options.log?.info({ tenantId: tenant.id, deletingSince: tenant.deleting_since.toISOString() }, 'finished the deletion of a tenant that was left marked')
  }
  return deleted
}
