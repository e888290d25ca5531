import type { DB } from '../db/connect.js'
import type { AttemptOutcome } from '../db/database.js'
import { newId } from '../lib/ids.js'
import { insertActivity } from '../modules/activities/repository.js'
import { bumpVersion, lockInstance, findStep, updateStep } from '../modules/instances/runtime-repository.js'
import { endStep, failWebhookStep, recordActivity, type Moment } from '../modules/instances/transitions.js'
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
 * Records one attempt in a short transaction after the call. The update presents the claim's fence,
 * so a worker whose lease expired (and whose delivery another worker took over) changes nothing.
 * Success ends the step and starts the next one in the same transaction.
 */
export function recordOutcome(db: DB, outcome: AttemptRecord, now: Date): Promise<Recorded> {
  const { delivery, decision } = outcome
  return db.transaction().execute(async (trx) => {
    const instance = delivery.instanceId ? await lockInstance(trx, delivery.tenantId, delivery.instanceId) : undefined
    // Fenced first: a stale claim must not even log an attempt (the reaper already logged its lost one).
    const settled = await repo.settleDelivery(trx, delivery, decision, outcome, now)
    if (!settled) return 'fenced'
    await repo.insertAttempt(trx, {
      tenant_id: delivery.tenantId,
      id: newId(),
      delivery_id: delivery.id,
      round: delivery.round,
      attempt_number: delivery.attempt,
      started_at: outcome.startedAt,
      duration_ms: outcome.durationMs,
      outcome: outcome.outcome,
      status_code: outcome.statusCode,
      error: outcome.error,
      response_body: outcome.responseBody
    })
    if (delivery.source === 'trigger' && decision.action !== 'retry') await recordTriggerOutcome(trx, outcome, now)
    const step = delivery.stepId ? await findStep(trx, delivery.tenantId, delivery.stepId) : undefined
    if (!instance || !step || instance.status !== 'running') return 'recorded'
    const moment: Moment = { now, timeZone: delivery.timeZone }
    if (step.state !== 'running' && step.state !== 'due') return 'recorded'
    await bumpVersion(trx, instance, now)
    if (decision.action === 'retry') {
      if (step.state === 'running') await updateStep(trx, delivery.tenantId, step.id, { state: 'due' })
    } else {
      if (decision.action === 'succeed') {
        await recordActivity(trx, instance, step, now, 'webhookSucceeded',
          `${delivery.serviceName} answered HTTP ${outcome.statusCode}.`, { deliveryId: delivery.id, statusCode: outcome.statusCode })
        await endStep(trx, instance, step, 'done', moment, null, delivery.serviceName)
      } else {
        await failWebhookStep(trx, instance, step, moment, decision.reason, delivery)
      }
    }
    return 'recorded'
  })
}

/** A record-change delivery's end shows on the record's activity log. */
async function recordTriggerOutcome(db: DB, { delivery, decision, statusCode }: AttemptRecord, now: Date): Promise<void> {
  const cause = `${delivery.event ?? 'change'} of ${(delivery.changedFields ?? []).join(', ')}`
  const succeeded = decision.action === 'succeed'
  await insertActivity(db, {
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
  })
}
