import type { DB } from '../../db/connect.js'
import type { DeliveryRow } from '../../db/database.js'
import { conflict, notFound } from '../../errors.js'
import { toPage, type PageRequest, type PageResult } from '../../lib/pagination.js'
import * as repo from './repository.js'
import type { Delivery, DeliveryAttempt, ListDeliveriesQuery } from './schemas.js'

type AttemptRow = Awaited<ReturnType<typeof repo.listAttempts>>[number]

function toAttempt(row: AttemptRow): DeliveryAttempt {
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

function toDelivery(row: DeliveryRow, attempts: AttemptRow[]): Delivery {
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
    attempts: attempts.map(toAttempt)
  }
}

async function withAttempts(db: DB, tenantId: string, rows: DeliveryRow[]): Promise<Map<string, AttemptRow[]>> {
  const byDelivery = new Map<string, AttemptRow[]>()
  for (const attempt of await repo.listAttempts(db, tenantId, rows.map((r) => r.id))) {
    const list = byDelivery.get(attempt.delivery_id) ?? []
    list.push(attempt)
    byDelivery.set(attempt.delivery_id, list)
  }
  return byDelivery
}

export async function listDeliveries(db: DB, tenantId: string, page: PageRequest, filter: ListDeliveriesQuery): Promise<PageResult<Delivery>> {
  const rows = await repo.listDeliveries(db, tenantId, page, filter)
  const attempts = await withAttempts(db, tenantId, rows.slice(0, page.limit))
  return toPage(rows, page, (row) => toDelivery(row, attempts.get(row.id) ?? []))
}

export async function getDelivery(db: DB, tenantId: string, id: string): Promise<Delivery> {
  const row = await repo.findDelivery(db, tenantId, id)
  if (!row) throw notFound('Delivery', id)
  const attempts = await withAttempts(db, tenantId, [row])
  return toDelivery(row, attempts.get(id) ?? [])
}

/**
 * Sends a finished delivery again, as a new round with the same deliveryId (so the same
 * Idempotency-Key). A step's delivery replays only once its step has ended: a failed step is
 * retried through its process instead, so that its success moves the process on.
 */
export async function replay(db: DB, now: Date, tenantId: string, id: string): Promise<Delivery> {
  await db.transaction().execute(async (trx) => {
    const row = await repo.lockDelivery(trx, tenantId, id)
    if (!row) throw notFound('Delivery', id)
    if (row.status === 'pending' || row.status === 'running') throw conflict(`Delivery ${id} is ${row.status}; it can be replayed once it has finished.`)
    const step = row.step_id ? await repo.findStepState(trx, tenantId, row.step_id) : undefined
    if (step && !['done', 'skipped', 'cancelled'].includes(step.state)) {
      throw conflict(`Step "${step.name}" is ${step.state}; ${step.state === 'failed'
        ? `retry it with POST /v1/process-instances/${row.instance_id}/steps/${row.step_id}/retry` : 'its delivery replays once it has ended'}.`)
    }
    await repo.replayDelivery(trx, tenantId, id, now)
  })
  return getDelivery(db, tenantId, id)
}
