import type { DB } from '../../db/connect.js'
import type { DeliveryRow } from '../../db/database.js'
import { notFound } from '../../errors.js'
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
