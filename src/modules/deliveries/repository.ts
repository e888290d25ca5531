import type { DB } from '../../db/connect.js'
import type { PageRequest } from '../../lib/pagination.js'
import type { ListDeliveriesQuery } from './schemas.js'

/** Newest first. */
export function listDeliveries(db: DB, tenantId: string, page: PageRequest, filter: ListDeliveriesQuery) {
  let query = db.selectFrom('deliveries').selectAll().where('tenant_id', '=', tenantId).orderBy('id', 'desc').limit(page.limit + 1)
  if (page.after) query = query.where('id', '<', page.after)
  if (filter.instanceId) query = query.where('instance_id', '=', filter.instanceId)
  if (filter.stepId) query = query.where('step_id', '=', filter.stepId)
  if (filter.serviceId) query = query.where('service_id', '=', filter.serviceId)
  if (filter.status) query = query.where('status', '=', filter.status as 'pending')
  const outcome = filter.outcome
  if (outcome) {
    query = query.where(({ exists, selectFrom }) => exists(selectFrom('delivery_attempts as a').select('a.id')
      .whereRef('a.tenant_id', '=', 'deliveries.tenant_id').whereRef('a.delivery_id', '=', 'deliveries.id')
      .where('a.outcome', '=', outcome)))
  }
  return query.execute()
}

export function findDelivery(db: DB, tenantId: string, id: string) {
  return db.selectFrom('deliveries').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst()
}

export function listAttempts(db: DB, tenantId: string, deliveryIds: string[]) {
  if (deliveryIds.length === 0) return Promise.resolve([])
  return db.selectFrom('delivery_attempts').selectAll()
    .where('tenant_id', '=', tenantId).where('delivery_id', 'in', deliveryIds)
    .orderBy('delivery_id').orderBy('round').orderBy('attempt_number')
    .execute()
}
