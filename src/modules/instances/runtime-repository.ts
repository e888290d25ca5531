import { sql, type Insertable, type Updateable } from 'kysely'
import { byKeys } from '../../db/by-keys.js'
import type { DB } from '../../db/connect.js'
import type {
  DeliveriesTable, DeliveryRow, InstanceRow, InstanceStepRow, InstanceStepsTable, OutboxMailsTable, ProcessInstancesTable, StepState
} from '../../db/database.js'

/** Rows of one tenant-owned table named by (tenant_id, id); ids are UUIDs, unique across tenants. */
export interface RowRef {
  tenant_id: string
  id: string
}

const unique = (values: string[]) => [...new Set(values)]

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

export async function insertDeliveries(db: DB, rows: Insertable<DeliveriesTable>[]): Promise<DeliveryRow[]> {
  return rows.length === 0 ? [] : db.insertInto('deliveries').values(rows).returningAll().execute()
}

export interface StepStartChange {
  tenant_id: string
  id: string
  start_at: Date
  assignee_user_id: string
  deadline_at: Date | null
}

/**
 * Starts many steps in one statement: due now, with their assignee and deadline. Only steps still in
 * one of `fromStates` change (another worker may have started one meanwhile); the started ones return.
 */
export async function startSteps(db: DB, changes: StepStartChange[], now: Date, fromStates: StepState[]): Promise<InstanceStepRow[]> {
  if (changes.length === 0) return []
  const { rows } = await sql<InstanceStepRow>`
    update instance_steps s
    set state = 'due', start_at = v.start_at, started_at = ${now}, assignee_user_id = v.assignee_user_id,
        deadline_at = v.deadline_at, version = s.version + 1
    from jsonb_to_recordset(${JSON.stringify(changes)}::jsonb)
      as v(tenant_id uuid, id uuid, start_at timestamptz, assignee_user_id uuid, deadline_at timestamptz)
    where ${byKeys('s', changes)} and s.tenant_id = v.tenant_id and s.id = v.id and s.state = any(${fromStates}::text[])
    returning s.*
  `.execute(db)
  return rows
}

export interface StepChange {
  tenant_id: string
  id: string
  state: StepState
  ended_at?: Date
  start_at?: Date
  note?: string | null
  /** Whether `note` replaces the step's note (a null note clears it). */
  set_note?: boolean
}

/** Changes many steps' states in one statement; each change moves its step's version on. The changed rows return. */
export async function changeSteps(db: DB, changes: StepChange[]): Promise<InstanceStepRow[]> {
  if (changes.length === 0) return []
  const { rows } = await sql<InstanceStepRow>`
    update instance_steps s
    set state = v.state, ended_at = coalesce(v.ended_at, s.ended_at), start_at = coalesce(v.start_at, s.start_at),
        note = case when v.set_note then v.note else s.note end, version = s.version + 1
    from jsonb_to_recordset(${JSON.stringify(changes)}::jsonb)
      as v(tenant_id uuid, id uuid, state text, ended_at timestamptz, start_at timestamptz, note text, set_note boolean)
    where ${byKeys('s', changes)} and s.tenant_id = v.tenant_id and s.id = v.id
    returning s.*
  `.execute(db)
  return rows
}

export interface InstanceChange {
  tenant_id: string
  id: string
  current_position?: number
  status?: 'completed' | 'cancelled'
  ended_at?: Date
  /** One change to the process moves its version (and so its ETag) on by one. */
  bump: boolean
}

/** Changes many processes in one statement: only the fields given change; updated_at becomes `now`. The changed rows return. */
export async function changeInstances(db: DB, changes: InstanceChange[], now: Date): Promise<InstanceRow[]> {
  if (changes.length === 0) return []
  const { rows } = await sql<InstanceRow>`
    update process_instances p
    set current_position = coalesce(v.current_position, p.current_position), status = coalesce(v.status, p.status),
        ended_at = coalesce(v.ended_at, p.ended_at), version = p.version + case when v.bump then 1 else 0 end, updated_at = ${now}
    from jsonb_to_recordset(${JSON.stringify(changes)}::jsonb)
      as v(tenant_id uuid, id uuid, current_position integer, status text, ended_at timestamptz, bump boolean)
    where ${byKeys('p', changes)} and p.tenant_id = v.tenant_id and p.id = v.id
    returning p.*
  `.execute(db)
  return rows
}

/** The steps at these positions of these processes, keyed `instanceId:position`. */
export async function findStepsAt(db: DB, wanted: { tenant_id: string; instance_id: string; position: number }[]): Promise<Map<string, InstanceStepRow>> {
  if (wanted.length === 0) return new Map()
  const { rows } = await sql<InstanceStepRow>`
    select s.* from instance_steps s
    join jsonb_to_recordset(${JSON.stringify(wanted)}::jsonb) as v(tenant_id uuid, instance_id uuid, position integer)
      on s.tenant_id = v.tenant_id and s.instance_id = v.instance_id and s.position = v.position
    where s.tenant_id = any(${unique(wanted.map((w) => w.tenant_id))}::uuid[]) and s.instance_id = any(${unique(wanted.map((w) => w.instance_id))}::uuid[])
  `.execute(db)
  return new Map(rows.map((r) => [`${r.instance_id}:${r.position}`, r]))
}

/** One change to each of these processes moves its version on by one. */
export async function bumpVersions(db: DB, instances: RowRef[], now: Date): Promise<void> {
  if (instances.length === 0) return
  await db.updateTable('process_instances').set((eb) => ({ version: eb('version', '+', 1), updated_at: now }))
    .where('tenant_id', 'in', unique(instances.map((i) => i.tenant_id))).where('id', 'in', unique(instances.map((i) => i.id)))
    .execute()
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

export async function findTimeZones(db: DB, tenantIds: string[]): Promise<Map<string, string>> {
  if (tenantIds.length === 0) return new Map()
  const rows = await db.selectFrom('tenants').select(['id', 'time_zone']).where('id', 'in', unique(tenantIds)).execute()
  return new Map(rows.map((r) => [r.id, r.time_zone]))
}

export function findTenantProfile(db: DB, tenantId: string) {
  return db.selectFrom('tenants').select(['id', 'name', 'web_id', 'time_zone']).where('id', '=', tenantId).executeTakeFirstOrThrow()
}

export async function findUsers(db: DB, refs: RowRef[]): Promise<Map<string, { id: string; name: string; email: string }>> {
  if (refs.length === 0) return new Map()
  const rows = await db.selectFrom('users').select(['id', 'name', 'email'])
    .where('tenant_id', 'in', unique(refs.map((r) => r.tenant_id))).where('id', 'in', unique(refs.map((r) => r.id))).execute()
  return new Map(rows.map((r) => [r.id, r]))
}

/** The maintainer and fields of each of these records. */
export async function findRecords(db: DB, table: 'properties' | 'addresses', refs: RowRef[]) {
  if (refs.length === 0) return new Map<string, { id: string; maintainer_user_id: string | null; fields: Record<string, unknown> }>()
  const rows = await db.selectFrom(table).select(['id', 'maintainer_user_id', 'fields'])
    .where('tenant_id', 'in', unique(refs.map((r) => r.tenant_id))).where('id', 'in', unique(refs.map((r) => r.id))).execute()
  return new Map(rows.map((r) => [r.id, r]))
}

/** Queues mails once each: an insert whose key is taken does nothing, however many workers try. */
export async function insertOutboxMails(db: DB, rows: Insertable<OutboxMailsTable>[]): Promise<void> {
  if (rows.length === 0) return
  await db.insertInto('outbox_mails').values(rows).onConflict((oc) => oc.columns(['tenant_id', 'dedupe_key']).doNothing()).execute()
}

/** How many steps each of these processes has. */
export async function countStepsOf(db: DB, instances: RowRef[]): Promise<Map<string, number>> {
  if (instances.length === 0) return new Map()
  const rows = await db.selectFrom('instance_steps').select(['instance_id', (eb) => eb.fn.countAll<string>().as('count')])
    .where('tenant_id', 'in', unique(instances.map((i) => i.tenant_id))).where('instance_id', 'in', unique(instances.map((i) => i.id)))
    .groupBy('instance_id').execute()
  return new Map(rows.map((r) => [r.instance_id, Number(r.count)]))
}
