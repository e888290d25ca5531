import type { Clock } from '../../adapters/clock.js'
import type { DB } from '../../db/connect.js'
import type { Wakeups } from '../../db/wakeups.js'
import type { DeliveryAttemptRow, DeliveryRow } from '../../db/database.js'
import { badRequest, conflict, notFound, ProblemError } from '../../errors.js'
import { newId } from '../../lib/ids.js'
import { toPage, type PageRequest, type PageResult } from '../../lib/pagination.js'
import { insertActivity } from '../activities/repository.js'
import { requeueDelivery } from '../instances/repository.js'
import { findServiceForTenant } from '../marketplace/activations/repository.js'
import { retryStep } from '../instances/service.js'
import * as repo from './repository.js'
import type { Delivery, DeliveryAttempt, ListDeliveriesQuery, RecoverDeliveries, RecoveryResult } from './schemas.js'

function toAttempt(row: DeliveryAttemptRow): DeliveryAttempt {
  return {
    id: row.id,
    round: row.round,
    attempt: row.attempt_number,
    startedAt: row.started_at.toISOString(),
    durationMs: row.duration_ms,
    outcome: row.outcome,
    statusCode: row.status_code,
    error: row.error,
    responseBody: row.response_body
  }
}

function toDelivery(row: DeliveryRow, shown: ShownAttempts | undefined): Delivery {
  return {
    id: row.id,
    serviceId: row.service_id,
    source: row.source,
    instanceId: row.instance_id,
    stepId: row.step_id,
    propertyId: row.property_id,
    addressId: row.address_id,
    event: row.event === 'create' || row.event === 'update' ? row.event : null,
    changedFields: row.changed_fields,
    status: row.status,
    round: row.round,
    attemptCount: row.attempt_count,
    nextAttemptAt: row.status === 'pending' ? row.next_attempt_at.toISOString() : null,
    lastStatusCode: row.last_status_code,
    lastError: row.last_error,
    createdAt: row.created_at.toISOString(),
    finishedAt: row.finished_at?.toISOString() ?? null,
    attempts: (shown?.attempts ?? []).map(toAttempt),
    earlierAttempts: shown?.earlier ?? 0
  }
}

/** A delivery's latest attempts, oldest first, and how many came before them (left out). */
interface ShownAttempts {
  attempts: DeliveryAttemptRow[]
  earlier: number
}

/**
 * The attempts these deliveries list: the latest ATTEMPTS_SHOWN of each. A delivery replayed or retried
 * thousands of times had all of its attempts read, bodies and all, into the API's memory on each read.
 */
async function withAttempts(db: DB, tenantId: string, rows: DeliveryRow[]): Promise<Map<string, ShownAttempts>> {
  const byDelivery = new Map<string, ShownAttempts>()
  for (const attempt of await repo.listAttempts(db, tenantId, rows.map((r) => r.id))) {
    const shown = byDelivery.get(attempt.delivery_id) ?? { attempts: [], earlier: 0 }
    shown.attempts.push(attempt)
    byDelivery.set(attempt.delivery_id, shown)
  }
  // One more than are shown was read where there are more: the oldest of them goes, and all are counted.
  const longer = [...byDelivery].filter(([, shown]) => shown.attempts.length > repo.ATTEMPTS_SHOWN).map(([id]) => id)
  const counts = await repo.countAttempts(db, tenantId, longer)
  for (const id of longer) {
    const shown = byDelivery.get(id)!
    shown.attempts.shift()
    shown.earlier = (counts.get(id) ?? 0) - shown.attempts.length
  }
  return byDelivery
}

export async function listDeliveries(db: DB, tenantId: string, page: PageRequest, filter: ListDeliveriesQuery): Promise<PageResult<Delivery>> {
  const rows = await repo.listDeliveries(db, tenantId, page, filter)
  const attempts = await withAttempts(db, tenantId, rows.slice(0, page.limit))
  return toPage(rows, page, (row) => toDelivery(row, attempts.get(row.id)))
}

export async function getDelivery(db: DB, tenantId: string, id: string): Promise<Delivery> {
  const row = await repo.findDelivery(db, tenantId, id)
  if (!row) throw notFound('Delivery', id)
  const attempts = await withAttempts(db, tenantId, [row])
  return toDelivery(row, attempts.get(id))
}

/**
 * Sends a finished delivery again, as a new round with the same deliveryId (so the same
 * Idempotency-Key). A step's delivery replays only once its step has ended: a failed step is
 * retried through its process instead, so that its success moves the process on.
 */
export async function replay(db: DB, now: Date, tenantId: string, id: string): Promise<Delivery> {
  return db.transaction().execute(async (trx) => {
    // The retention removes a process it has locked (remove-old-history.ts): holding it first, a replay
    // either keeps it until the replay is queued, or waits for the removal and finds nothing.
    await repo.holdDeliveryProcess(trx, tenantId, id)
    const row = await repo.lockDelivery(trx, tenantId, id)
    if (!row) throw notFound('Delivery', id)
    if (row.status === 'pending' || row.status === 'running') throw conflict(`Delivery ${id} is ${row.status}; it can be replayed once it has finished.`)
    // The scheduler would not call a service this tenant no longer has active: say so now.
    const service = row.service_id === null ? undefined : await findServiceForTenant(trx, tenantId, row.service_id)
    if (service && (!service.active || !service.activated_at)) {
      throw conflict(`Service "${service.name}" is not active for this tenant; activate it before replaying its deliveries.`)
    }
    // Nor a trigger's call whose record was deleted since (the claim would give it up without a call).
    if (row.source === 'trigger' && !(await repo.triggerRecordExists(trx, row))) {
      const record = row.property_id !== null ? `Property ${row.property_id}` : `Address ${row.address_id}`
      throw conflict(`${record} was deleted; its trigger's call is not made again.`)
    }
    // Nor one that no trigger of its service watches any more (deleted or changed since).
    if (row.source === 'trigger' && !(await repo.triggerStillWanted(trx, row))) {
      throw conflict(`No trigger of service "${service?.name ?? row.service_id}" watches this ${row.property_id !== null ? 'property' : 'address'} change any more; its call is not made again.`)
    }
    const step = row.step_id ? await repo.findStepState(trx, tenantId, row.step_id) : undefined
    if (step && !['done', 'skipped', 'cancelled'].includes(step.state)) {
      throw conflict(`Step "${step.name}" is ${step.state}; ${step.state === 'failed'
        ? `retry it with POST /v1/process-instances/${row.instance_id}/steps/${row.step_id}/retry` : 'its delivery replays once it has ended'}.`)
    }
    await repo.replayDelivery(trx, tenantId, id, now)
    await audit(trx, row, now, 'deliveryReplayed', `Delivery ${id} sent again by hand (round ${row.round + 1}).`)
    // Read inside the transaction: the answer is what committed.
    return getDelivery(trx, tenantId, id)
  })
}

/** At most this many deliveries are queued again by one recovery call (those that gave up longest ago); call again for the rest. */
export const RECOVERY_LIMIT = 1000

/**
 * After a provider's outage: queues this tenant's failed deliveries of the service again, each as a new
 * round (a failed step goes back to the scheduler as a retry of its process would). A dry run counts.
 */
export async function recover(db: DB, clock: Clock, wakeups: Wakeups, tenantId: string, serviceId: string, input: RecoverDeliveries): Promise<RecoveryResult> {
  const service = await findServiceForTenant(db, tenantId, serviceId)
  // A service this tenant cannot see (inactive, never activated by it) answers as an unknown id does.
  if (!service || (!service.active && !service.activated_at)) throw notFound('Marketplace service', serviceId)
  if (!service.active || !service.activated_at) {
    throw conflict(`Service "${service.name}" is not active for this tenant; activate it before recovering its deliveries.`)
  }
  const since = new Date(input.since)
  // A few forms pass the date-time format yet mean no instant here (a leap second, "+01" offsets).
  if (Number.isNaN(since.getTime())) {
    throw badRequest(`"${input.since}" is not a time Baton can read; use the form 2026-11-28T08:00:00Z.`, [{ pointer: '/body/since', detail: 'not a readable time' }])
  }
  const candidates = await repo.findRecoverable(db, tenantId, serviceId, since, RECOVERY_LIMIT)
  if (input.dryRun) return { dryRun: true, count: candidates.length, deliveryIds: candidates.map((c) => c.id) }
  const queued: string[] = []
  for (const candidate of candidates) {
    if (candidate.source === 'step' && candidate.instance_id && candidate.step_id) {
      // The step's own retry: its 404 or 409 means it changed meanwhile (advanced, cancelled, being
      // changed) and it is left alone; anything else (the database away) fails the call, which a
      // retry of it repeats safely: what was queued is no longer failed.
      const retried = await retryStep(db, clock, wakeups, tenantId, candidate.instance_id, candidate.step_id).then(() => true, (error: unknown) => {
        if (error instanceof ProblemError && (error.status === 404 || error.status === 409)) return false
        throw error
      })
      if (retried) queued.push(candidate.id)
      continue
    }
    const now = clock.now()
    const requeued = await db.transaction().execute(async (trx) => {
      const row = await repo.lockDelivery(trx, tenantId, candidate.id)
      const again = row && await requeueDelivery(trx, tenantId, candidate.id, now)
      if (row && again) await audit(trx, row, now, 'deliveryRecovered', `Delivery ${row.id} of "${service.name}" queued again after an outage (round ${again.round}).`)
      return again !== undefined
    })
    if (requeued) {
      queued.push(candidate.id)
      wakeups.announce(['deliveries'])
    }
  }
  return { dryRun: false, count: queued.length, deliveryIds: queued }
}

/** A hand-made resend shows on the activity log of every record and process the delivery is about. */
function audit(db: DB, row: DeliveryRow, now: Date, kind: string, message: string) {
  return insertActivity(db, {
    tenant_id: row.tenant_id,
    id: newId(now.getTime()),
    kind,
    message,
    property_id: row.property_id,
    address_id: row.address_id,
    instance_id: row.instance_id,
    step_id: row.step_id,
    service_id: row.service_id,
    data: { deliveryId: row.id, round: row.round + 1 },
    created_at: now
  })
}
