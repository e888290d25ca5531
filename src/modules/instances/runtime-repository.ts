import type { Insertable, Updateable } from 'kysely'
import type { DB } from '../../db/connect.js'
import type { DeliveriesTable, InstanceStepsTable, OutboxMailsTable, ProcessInstancesTable } from '../../db/database.js'

/** Locks the instance row: every change to a running process starts here. */
export function lockInstance(db: DB, tenantId: string, id: string, options: { noWait?: boolean; skipLocked?: boolean } = {}) {
  const query = db.selectFrom('process_instances').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).forUpdate()
  if (options.noWait) return query.noWait().executeTakeFirst()
  return (options.skipLocked ? query.skipLocked() : query).executeTakeFirst()
}

export function updateInstance(db: DB, tenantId: string, id: string, changes: Updateable<ProcessInstancesTable>) {
  return db.updateTable('process_instances').set(changes).where('tenant_id', '=', tenantId).where('id', '=', id).execute()
}

/** One change to a process, from the API or the scheduler, moves its version (and so its ETag) on by one. */
export function bumpVersion(db: DB, instance: { tenant_id: string; id: string; version: number }, now: Date) {
  return updateInstance(db, instance.tenant_id, instance.id, { version: instance.version + 1, updated_at: now })
}

export function findStepAt(db: DB, tenantId: string, instanceId: string, position: number) {
  return db.selectFrom('instance_steps').selectAll()
    .where('tenant_id', '=', tenantId).where('instance_id', '=', instanceId).where('position', '=', position)
    .executeTakeFirst()
}

export function findStep(db: DB, tenantId: string, stepId: string) {
  return db.selectFrom('instance_steps').selectAll().where('tenant_id', '=', tenantId).where('id', '=', stepId).executeTakeFirst()
}

export function updateStep(db: DB, tenantId: string, stepId: string, changes: Updateable<InstanceStepsTable>) {
  return db.updateTable('instance_steps')
    .set((eb) => ({ ...changes, version: eb('version', '+', 1) }))
    .where('tenant_id', '=', tenantId).where('id', '=', stepId)
    .execute()
}

/** Ends every step of an instance that has not ended; returns how many. */
export async function cancelOpenSteps(db: DB, tenantId: string, instanceId: string, now: Date): Promise<number> {
  const result = await db.updateTable('instance_steps')
    .set((eb) => ({ state: 'cancelled', ended_at: now, version: eb('version', '+', 1) }))
    .where('tenant_id', '=', tenantId).where('instance_id', '=', instanceId)
    .where('state', 'not in', ['done', 'skipped', 'cancelled'])
    .executeTakeFirst()
  return Number(result.numUpdatedRows)
}

export function insertDelivery(db: DB, row: Insertable<DeliveriesTable>) {
  return db.insertInto('deliveries').values(row).execute()
}

/** Cancels the step's deliveries no worker has claimed; returns how many. */
export async function cancelPendingDeliveries(db: DB, tenantId: string, where: { stepId?: string; instanceId?: string }, now: Date): Promise<number> {
  let query = db.updateTable('deliveries').set({ status: 'cancelled', finished_at: now })
    .where('tenant_id', '=', tenantId).where('status', '=', 'pending')
  if (where.stepId) query = query.where('step_id', '=', where.stepId)
  if (where.instanceId) query = query.where('instance_id', '=', where.instanceId)
  const result = await query.executeTakeFirst()
  return Number(result.numUpdatedRows)
}

export function findLatestStepDelivery(db: DB, tenantId: string, stepId: string) {
  return db.selectFrom('deliveries').selectAll().where('tenant_id', '=', tenantId).where('step_id', '=', stepId)
    .orderBy('id', 'desc').limit(1).executeTakeFirst()
}

export function findTenantProfile(db: DB, tenantId: string) {
  return db.selectFrom('tenants').select(['id', 'name', 'web_id', 'time_zone']).where('id', '=', tenantId).executeTakeFirstOrThrow()
}

export function findUser(db: DB, tenantId: string, userId: string) {
  return db.selectFrom('users').select(['id', 'name', 'email']).where('tenant_id', '=', tenantId).where('id', '=', userId).executeTakeFirst()
}

export async function findMaintainer(db: DB, tenantId: string, table: 'properties' | 'addresses', id: string): Promise<string | null> {
  const row = await db.selectFrom(table).select('maintainer_user_id').where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst()
  return row?.maintainer_user_id ?? null
}

export function findRecordFields(db: DB, tenantId: string, table: 'properties' | 'addresses', id: string) {
  return db.selectFrom(table).select(['id', 'fields']).where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst()
}

/** Queues a mail once: a second insert with the same key does nothing, however many workers try. */
export function insertOutboxMail(db: DB, row: Insertable<OutboxMailsTable>) {
  return db.insertInto('outbox_mails').values(row).onConflict((oc) => oc.columns(['tenant_id', 'dedupe_key']).doNothing()).execute()
}

export async function countSteps(db: DB, tenantId: string, instanceId: string): Promise<number> {
  const row = await db.selectFrom('instance_steps').select((eb) => eb.fn.countAll<string>().as('count'))
    .where('tenant_id', '=', tenantId).where('instance_id', '=', instanceId).executeTakeFirstOrThrow()
  return Number(row.count)
}
