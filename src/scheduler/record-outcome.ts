import type { DB } from '../db/connect.js'
import type { AttemptOutcome } from '../db/database.js'
import { newId } from '../lib/ids.js'
import { ProcessChanges } from '../modules/instances/process-changes.js'
import type { ClaimedDelivery } from './claim-deliveries.js'
import type { Decision } from './retry-policy.js'
import * as repo from './delivery-repository.js'

export interface AttemptRecord {
  delivery: ClaimedDelivery
  startedAt: Date
  durationMs: number
  statusCode: number | null
  error: string | null
  responseBody: string | null
  decision: Decision
  /** How the attempt log shows it: `aborted` for a call cut off before its answer. */
  outcome: AttemptOutcome
}

export type Recorded = 'recorded' | 'fenced'

/**
 * Records the attempts of many calls in one short transaction after them, with a statement per table
 * for the whole batch. Each delivery's update presents its claim's fence, so a worker whose lease
 * expired (and whose delivery another worker took over) changes nothing, not even the attempt log
 * (the reaper logged its lost attempt). A success ends its step and starts the next one in the same
 * transaction. Processes are locked in id order, so concurrent batches cannot deadlock.
 */
export function recordOutcomes(db: DB, records: AttemptRecord[], now: Date): Promise<Recorded[]> {
  return db.transaction().execute(async (trx) => {
    const forSteps = records.filter((r) => r.delivery.instanceId && r.delivery.stepId)
    const lockRefs = forSteps.map((r) => ({ tenant_id: r.delivery.tenantId, id: r.delivery.instanceId! }))
    const { instances, settled, steps: stepRows } = await repo.lockAndSettle(trx, lockRefs, records, records.map((r) => ({
      tenant_id: r.delivery.tenantId,
      id: newId(),
      delivery_id: r.delivery.id,
      round: r.delivery.round,
      attempt_number: r.delivery.attempt,
      started_at: r.startedAt,
      duration_ms: r.durationMs,
      outcome: r.outcome,
      status_code: r.statusCode,
      error: r.error,
      response_body: r.responseBody,
      fence: r.delivery.fence
    })), now, forSteps.map((r) => ({ tenant_id: r.delivery.tenantId, id: r.delivery.stepId! })))
    // Held by its claim: of two outcomes of one delivery in the batch, the stale claim's is fenced like any other.
    const held = (r: AttemptRecord) => settled.get(r.delivery.id) === r.delivery.fence
    const kept = records.filter(held)
    const zones = new Map(kept.map((r) => [r.delivery.tenantId, r.delivery.timeZone]))
    const changes = new ProcessChanges(trx, now, zones)
    for (const record of kept.filter((r) => r.delivery.source === 'trigger' && r.decision.action !== 'retry')) changes.rawActivity(triggerActivity(record, now))
    const steps = new Map(stepRows.map((s) => [s.id, s]))
    // The steps after these are known now: a success moves its process on without reading them again.
    for (const { delivery } of kept) if (delivery.stepId && steps.has(delivery.stepId)) changes.knowNextOf(steps.get(delivery.stepId)!, stepRows)
    for (const record of kept) {
      const { delivery, decision } = record
      const instance = delivery.instanceId ? instances.get(delivery.instanceId) : undefined
      const step = delivery.stepId ? steps.get(delivery.stepId) : undefined
      if (!instance || !step) continue
      // What the process shows of its step's latest delivery changes: its version (its ETag) moves on,
      // also for a replayed call of a step that has ended, which changes nothing else.
      changes.bump(instance)
      if (instance.status !== 'running' || (step.state !== 'running' && step.state !== 'due')) continue
      if (decision.action === 'retry') {
        if (step.state === 'running') changes.setStepState(step, 'due')
      } else if (decision.action === 'succeed') {
        changes.activity(instance, step, 'webhookSucceeded', `${delivery.serviceName} answered HTTP ${record.statusCode}.`,
          { deliveryId: delivery.id, statusCode: record.statusCode })
        changes.endStep(instance, step, 'done', null, delivery.serviceName)
      } else {
        changes.failWebhookStep(instance, step, decision.reason, delivery)
      }
    }
    // Nothing here answers with the rows written, and the worker hears of new work by NOTIFY; the
    // write is the transaction's last statement and carries its COMMIT.
    await changes.flush({ answer: false, last: true })
    return records.map((r) => (held(r) ? 'recorded' : 'fenced'))
  })
}

/** A record-change delivery's end shows on the record's activity log. */
function triggerActivity({ delivery, decision, statusCode }: AttemptRecord, now: Date) {
  // A create without fields changed none.
  const fields = delivery.changedFields ?? []
  const cause = `${delivery.event ?? 'change'}${fields.length > 0 ? ` of ${fields.join(', ')}` : ''}`
  const succeeded = decision.action === 'succeed'
  return {
    tenant_id: delivery.tenantId,
    id: newId(now.getTime()),
    kind: succeeded ? 'webhookSucceeded' : 'webhookFailed',
    message: succeeded ? `${delivery.serviceName} answered HTTP ${statusCode} (triggered by the ${cause}).`
      : `${delivery.serviceName} gave up (triggered by the ${cause}): ${decision.action === 'give-up' ? decision.reason : ''}.`,
    property_id: delivery.propertyId,
    address_id: delivery.addressId,
    service_id: delivery.serviceId,
    data: { deliveryId: delivery.id, statusCode, event: delivery.event, changedFields: delivery.changedFields },
    created_at: now
  }
}
