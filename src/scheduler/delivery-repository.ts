import type { Insertable } from 'kysely'
import type { DB } from '../db/connect.js'
import type { DeliveryAttemptsTable } from '../db/database.js'
import type { ClaimedDelivery } from './claim-deliveries.js'
import type { Decision } from './retry-policy.js'

export function insertAttempt(db: DB, row: Insertable<DeliveryAttemptsTable>) {
  return db.insertInto('delivery_attempts').values(row).execute()
}

/** Applies the decision if this worker's claim (its fence) still holds; false when it does not. */
export async function settleDelivery(
  db: DB, delivery: ClaimedDelivery, decision: Decision, outcome: { statusCode: number | null; error: string | null }, now: Date
): Promise<boolean> {
  const common = { lease_owner: null, lease_expires_at: null, last_status_code: outcome.statusCode, last_error: outcome.error }
  const changes = decision.action === 'succeed' ? { ...common, status: 'succeeded' as const, finished_at: now }
    : decision.action === 'retry' ? { ...common, status: 'pending' as const, next_attempt_at: new Date(now.getTime() + decision.delayMs) }
      : { ...common, status: 'failed' as const, finished_at: now, last_error: outcome.error ?? decision.reason }
  const result = await db.updateTable('deliveries').set(changes)
    .where('tenant_id', '=', delivery.tenantId).where('id', '=', delivery.id)
    .where('fence', '=', delivery.fence).where('status', '=', 'running')
    .executeTakeFirst()
  return result.numUpdatedRows > 0n
}

/**
 * Puts a claimed delivery back without counting an attempt, due again at `dueAt`: a worker shutting
 * down releases it, and so does a call whose host has no free slot.
 */
export async function releaseDelivery(
  db: DB, claim: { tenantId: string; id: string; stepId: string | null; fence: number }, now: Date, dueAt = now
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const released = await trx.updateTable('deliveries')
      .set((eb) => ({ status: 'pending', lease_owner: null, lease_expires_at: null, next_attempt_at: dueAt, attempt_count: eb('attempt_count', '-', 1) }))
      .where('tenant_id', '=', claim.tenantId).where('id', '=', claim.id).where('fence', '=', claim.fence).where('status', '=', 'running')
      .executeTakeFirst()
    if (released.numUpdatedRows > 0n && claim.stepId) {
      await trx.updateTable('instance_steps').set({ state: 'due' })
        .where('tenant_id', '=', claim.tenantId).where('id', '=', claim.stepId).where('state', '=', 'running').execute()
    }
  })
}
