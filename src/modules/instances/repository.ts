import type { Insertable } from 'kysely'
import type { DB } from '../../db/connect.js'
import type { InstanceStepsTable, ProcessInstancesTable } from '../../db/database.js'
import type { PageRequest } from '../../lib/pagination.js'

export interface InstanceFilter {
  status?: string | undefined
  currentStepState?: string | undefined
  assigneeUserId?: string | undefined
  templateId?: string | undefined
  propertyId?: string | undefined
  addressId?: string | undefined
}

export function findInstance(db: DB, tenantId: string, id: string) {
  return db.selectFrom('process_instances').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst()
}

export function findInstanceByIdempotencyKey(db: DB, tenantId: string, key: string) {
  return db.selectFrom('process_instances').selectAll().where('tenant_id', '=', tenantId).where('idempotency_key', '=', key).executeTakeFirst()
}

/** Inserts the instance unless its idempotency key is taken (a concurrent start waits for the other one). */
export function insertInstance(db: DB, row: Insertable<ProcessInstancesTable>) {
  return db.insertInto('process_instances').values(row)
    .onConflict((oc) => oc.columns(['tenant_id', 'idempotency_key']).doNothing())
    .returningAll().executeTakeFirst()
}

export async function insertSteps(db: DB, rows: Insertable<InstanceStepsTable>[]) {
  return rows.length === 0 ? [] : db.insertInto('instance_steps').values(rows).returningAll().execute()
}

export function listSteps(db: DB, tenantId: string, instanceId: string) {
  return db.selectFrom('instance_steps').selectAll().where('tenant_id', '=', tenantId).where('instance_id', '=', instanceId)
    .orderBy('position').execute()
}

/** The latest delivery of each webhook step of an instance. */
export function latestDeliveriesOf(db: DB, tenantId: string, instanceId: string) {
  return db.selectFrom('deliveries').distinctOn('step_id')
    .select(['id', 'step_id', 'status', 'round', 'attempt_count', 'next_attempt_at', 'last_status_code', 'last_error'])
    .where('tenant_id', '=', tenantId).where('instance_id', '=', instanceId).where('step_id', 'is not', null)
    .orderBy('step_id').orderBy('id', 'desc')
    .execute()
}

/** Newest first, with the current step joined in for the summary. */
export function listInstances(db: DB, tenantId: string, page: PageRequest, filter: InstanceFilter) {
  let query = db.selectFrom('process_instances as i')
    .leftJoin('instance_steps as s', (join) => join
      .onRef('s.tenant_id', '=', 'i.tenant_id').onRef('s.instance_id', '=', 'i.id').onRef('s.position', '=', 'i.current_position'))
    .selectAll('i')
    .select([
      's.id as step_id', 's.position as step_position', 's.name as step_name', 's.state as step_state',
      's.assignee_user_id as step_assignee_user_id', 's.start_at as step_start_at', 's.deadline_at as step_deadline_at'
    ])
    .where('i.tenant_id', '=', tenantId)
    .orderBy('i.id', 'desc').limit(page.limit + 1)
  if (page.after) query = query.where('i.id', '<', page.after)
  if (filter.status) query = query.where('i.status', '=', filter.status as 'running')
  if (filter.templateId) query = query.where('i.template_id', '=', filter.templateId)
  if (filter.propertyId) query = query.where('i.property_id', '=', filter.propertyId)
  if (filter.addressId) query = query.where('i.address_id', '=', filter.addressId)
  if (filter.currentStepState) query = query.where('i.status', '=', 'running').where('s.state', '=', filter.currentStepState as 'due')
  if (filter.assigneeUserId) query = query.where('i.status', '=', 'running').where('s.assignee_user_id', '=', filter.assigneeUserId)
  return query.execute()
}

export type InstanceListRow = Awaited<ReturnType<typeof listInstances>>[number]

/** Puts a failed webhook step's delivery back in the queue with a fresh retry budget. */
export function requeueDelivery(db: DB, tenantId: string, deliveryId: string, now: Date) {
  return db.updateTable('deliveries')
    .set((eb) => ({
      status: 'pending', round: eb('round', '+', 1), attempt_count: 0, next_attempt_at: now,
      lease_owner: null, lease_expires_at: null, finished_at: null
    }))
    .where('tenant_id', '=', tenantId).where('id', '=', deliveryId).where('status', '=', 'failed')
    .returning(['id', 'round']).executeTakeFirst()
}
