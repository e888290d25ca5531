import { sql, type Insertable, type Updateable } from '../../../db/kysely.js'
import type { DB } from '../../../db/connect.js'
import type { MarketplaceServicesTable } from '../../../db/database.js'
import type { PageRequest } from '../../../lib/pagination.js'

export interface ServiceFilter {
  active?: boolean | undefined
  provider?: string | undefined
  activated?: boolean | undefined
}

export function findServiceById(db: DB, id: string) {
  return db.selectFrom('marketplace_services').selectAll().where('id', '=', id).executeTakeFirst()
}

// Services as one tenant sees them: active ones and those it has activated, with that flag.

function servicesSeenBy(db: DB, tenantId: string) {
  return db.selectFrom('marketplace_services as s')
    .leftJoin('service_activations as a', (join) => join.onRef('a.service_id', '=', 's.id').on('a.tenant_id', '=', tenantId))
    .selectAll('s')
    .select((eb) => eb('a.tenant_id', 'is not', null).as('activated'))
    .where((eb) => eb.or([eb('s.active', '=', true), eb('a.tenant_id', 'is not', null)]))
}

export function findServiceSeenBy(db: DB, tenantId: string, id: string) {
  return servicesSeenBy(db, tenantId).where('s.id', '=', id).executeTakeFirst()
}

export function listServicesSeenBy(db: DB, tenantId: string, page: PageRequest, filter: ServiceFilter) {
  let query = servicesSeenBy(db, tenantId).orderBy('s.id').limit(page.limit + 1)
  if (page.after) query = query.where('s.id', '>', page.after)
  if (filter.active !== undefined) query = query.where('s.active', '=', filter.active)
  if (filter.provider !== undefined) query = query.where('s.provider', '=', filter.provider)
  if (filter.activated !== undefined) query = query.where('a.tenant_id', filter.activated ? 'is not' : 'is', null)
  return query.execute()
}

export function listServices(db: DB, page: PageRequest, filter: ServiceFilter) {
  let query = db.selectFrom('marketplace_services').selectAll().orderBy('id').limit(page.limit + 1)
  if (page.after) query = query.where('id', '>', page.after)
  if (filter.active !== undefined) query = query.where('active', '=', filter.active)
  if (filter.provider !== undefined) query = query.where('provider', '=', filter.provider)
  return query.execute()
}

export function insertService(db: DB, row: Insertable<MarketplaceServicesTable>) {
  return db.insertInto('marketplace_services').values(row).returningAll().executeTakeFirstOrThrow()
}

/**
 * The service row, locked until the transaction ends: updates of one service and of its parameters
 * run one after another, and a step write, which holds the service FOR SHARE while it checks the
 * parameters it passes, runs before or after them. Rows that merely refer to the service (its
 * deliveries, steps) do not wait.
 */
export function lockService(trx: DB, id: string) {
  return trx.selectFrom('marketplace_services').selectAll().where('id', '=', id).forNoKeyUpdate().executeTakeFirst()
}

/** The service, locked against every other change and against a new row naming it (FOR UPDATE), to delete it. */
export function lockServiceToDelete(trx: DB, id: string) {
  return trx.selectFrom('marketplace_services').select('version').where('id', '=', id).forUpdate().executeTakeFirst()
}

/** Updates the service (locked by lockService) and moves its version on. */
export function updateService(trx: DB, id: string, changes: Updateable<MarketplaceServicesTable>) {
  return trx.updateTable('marketplace_services')
    .set(changes)
    .set((eb) => ({ version: eb('version', '+', 1) }))
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirstOrThrow()
}

/** Deletes the service (locked by lockServiceToDelete). */
export async function deleteService(trx: DB, id: string): Promise<void> {
  await trx.deleteFrom('marketplace_services').where('id', '=', id).execute()
}

export interface TemplateUsage {
  serviceId: string
  /** Only templates of this tenant; all tenants when absent. */
  tenantId?: string | undefined
  /** Only steps that pass this parameter. */
  parameterName?: string | undefined
  /** Only steps that do not pass this parameter. */
  lacking?: string | undefined
}

/** Templates with a step that calls the service, a few of them, to name in a 409. */
export function findTemplatesUsing(db: DB, usage: TemplateUsage) {
  let query = db.selectFrom('template_steps as st')
    .innerJoin('process_templates as t', (join) => join.onRef('t.tenant_id', '=', 'st.tenant_id').onRef('t.id', '=', 'st.template_id'))
    .select(['t.id', 't.name'])
    .distinct()
    .where('st.service_id', '=', usage.serviceId)
    .orderBy('t.id')
    .limit(10)
  if (usage.tenantId !== undefined) query = query.where('st.tenant_id', '=', usage.tenantId)
  if (usage.parameterName !== undefined) query = query.where(sql<boolean>`st.parameters ? ${usage.parameterName}`)
  if (usage.lacking !== undefined) query = query.where(sql<boolean>`not (coalesce(st.parameters, '{}') ? ${usage.lacking})`)
  return query.execute()
}

/**
 * Running processes with a step that calls the service and has not ended (its call still to come, in
 * flight, or to be retried), a few of them, to name in a 409: a process copied its steps when it
 * started, so a parameter its steps pass, or lack, stays as it was there whatever the templates say now.
 */
export function findProcessesUsing(db: DB, usage: Omit<TemplateUsage, 'tenantId'>) {
  let query = db.selectFrom('instance_steps as st')
    .innerJoin('process_instances as i', (join) => join.onRef('i.tenant_id', '=', 'st.tenant_id').onRef('i.id', '=', 'st.instance_id'))
    .select(['i.id'])
    .distinct()
    .where('st.service_id', '=', usage.serviceId)
    .where('i.status', '=', 'running')
    .where('st.state', 'in', ['pending', 'waiting', 'due', 'running', 'failed'])
    .orderBy('i.id')
    .limit(10)
  if (usage.parameterName !== undefined) query = query.where(sql<boolean>`st.parameters ? ${usage.parameterName}`)
  if (usage.lacking !== undefined) query = query.where(sql<boolean>`not (coalesce(st.parameters, '{}') ? ${usage.lacking})`)
  return query.execute()
}

/** Whether process instances or the delivery log still refer to the service. */
export async function hasServiceHistory(db: DB, serviceId: string): Promise<boolean> {
  const [step, delivery] = await Promise.all([
    db.selectFrom('instance_steps').select('id').where('service_id', '=', serviceId).limit(1).executeTakeFirst(),
    db.selectFrom('deliveries').select('id').where('service_id', '=', serviceId).limit(1).executeTakeFirst()
  ])
  return step !== undefined || delivery !== undefined
}
