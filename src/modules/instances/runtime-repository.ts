import { sql, type Insertable } from '../../db/kysely.js'
import { byKeys } from '../../db/by-keys.js'
import type { DB } from '../../db/connect.js'
import type { InstanceStepRow, OutboxMailsTable } from '../../db/database.js'

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

export function findStepAt(db: DB, tenantId: string, instanceId: string, position: number) {
  return db.selectFrom('instance_steps').selectAll()
    .where('tenant_id', '=', tenantId).where('instance_id', '=', instanceId).where('position', '=', position)
    .executeTakeFirst()
}

export function findStep(db: DB, tenantId: string, stepId: string) {
  return db.selectFrom('instance_steps').selectAll().where('tenant_id', '=', tenantId).where('id', '=', stepId).executeTakeFirst()
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

/** The steps at these positions of these processes, keyed `instanceId:position`. */
export async function findStepsAt(db: DB, wanted: { tenant_id: string; instance_id: string; position: number }[]): Promise<Map<string, InstanceStepRow>> {
  if (wanted.length === 0) return new Map()
  const { rows } = await stepsAt(wanted).execute(db)
  return new Map(rows.map((r) => [`${r.instance_id}:${r.position}`, r]))
}

/**
 * The statement of findStepsAt: each step by its position key, in a lateral lookup of its own (as
 * eachKey in src/db/by-keys.ts), whatever the statistics. As a join, a plan made for unknown arrays on
 * an empty table scanned the whole table.
 */
export function stepsAt(wanted: { tenant_id: string; instance_id: string; position: number }[]) {
  return sql<InstanceStepRow>`
    select s.* from jsonb_to_recordset(${JSON.stringify(wanted)}::jsonb) as v(tenant_id uuid, instance_id uuid, position integer)
    cross join lateral (
      select * from instance_steps x where x.instance_id = v.instance_id and x.tenant_id = v.tenant_id and x.position = v.position offset 0
    ) s
  `
}

/**
 * Cancels the step's (or the process's) deliveries no worker has claimed, with `reason` as their `lastError`
 * (as a withdrawn trigger's call says why); returns how many. It first locks
 * those that have not finished, after waiting for whoever changes one now: a claim, or a claim going back
 * to the queue (a worker's release, the reaper), which sets its step back to due without the process's
 * lock. Until the caller's transaction ends none of them changes (claims and the reaper pass over locked
 * rows, a release waits), so the state of a step read afterwards agrees with its delivery's: a claim that
 * went back between the cancel and that read left its call queued for a step or process that had ended.
 */
export async function cancelPendingDeliveries(
  db: DB, tenantId: string, where: { stepId?: string; instanceId?: string }, now: Date, reason: string
): Promise<number> {
  let open = db.selectFrom('deliveries').select('id').where('tenant_id', '=', tenantId).where('status', 'in', ['pending', 'running'])
  let pending = db.updateTable('deliveries').set({ status: 'cancelled', finished_at: now, last_error: reason }).where('tenant_id', '=', tenantId).where('status', '=', 'pending')
  if (where.stepId) {
    open = open.where('step_id', '=', where.stepId)
    pending = pending.where('step_id', '=', where.stepId)
  }
  if (where.instanceId) {
    open = open.where('instance_id', '=', where.instanceId)
    pending = pending.where('instance_id', '=', where.instanceId)
  }
  // The lock the update takes, no more: a foreign key's check of a delivery is not held back.
  await open.forNoKeyUpdate().execute()
  const result = await pending.executeTakeFirst()
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

export async function findUsers(db: DB, refs: RowRef[]): Promise<Map<string, { id: string; name: string; email: string }>> {
  if (refs.length === 0) return new Map()
  const rows = await db.selectFrom('users').select(['id', 'name', 'email']).where(byKeys('users', refs)).execute()
  return new Map(rows.map((r) => [r.id, r]))
}

/**
 * By their keys (byKeys), as findUsers: `tenant_id in (…) and id in (…)` walked every record of the
 * batch's tenants, and a chore's batch may span a hundred tenants.
 */
function recordsNamed(db: DB, table: 'properties' | 'addresses', refs: RowRef[]) {
  return db.selectFrom(table).where(byKeys(table, refs))
}

/**
 * The maintainer of each of these records, without their fields (up to 256 KiB each), held (FOR KEY
 * SHARE) until the transaction ends, as the foreign key of a step assigned to them holds them, only
 * sooner: `held` is false where a deletion of the maintainer committed while the read waited for it
 * (the record named someone else by then), and for a record without one.
 */
export async function findRecordMaintainers(
  db: DB, table: 'properties' | 'addresses', refs: RowRef[]
): Promise<{ id: string; maintainer_user_id: string | null; held: boolean }[]> {
  if (refs.length === 0) return []
  return recordsNamed(db, table, refs).select(['id', 'maintainer_user_id', sql<boolean>`exists (select from users u
    where u.tenant_id = ${sql.ref(`${table}.tenant_id`)} and u.id = ${sql.ref(`${table}.maintainer_user_id`)} for key share of u)`.as('held')]).execute()
}

/** The maintainer and fields of each of these records. */
export async function findRecords(db: DB, table: 'properties' | 'addresses', refs: RowRef[]) {
  if (refs.length === 0) return new Map<string, { id: string; maintainer_user_id: string | null; fields: Record<string, unknown> }>()
  const rows = await recordsNamed(db, table, refs).select(['id', 'maintainer_user_id', 'fields']).execute()
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

/**
 * Withdraws an email step's mail that no worker is sending: an unsent one is deleted. False when a
 * worker holds it right now (its outcome is not known yet). Sent mails are not touched (nor locked).
 */
export async function withdrawStepMail(db: DB, tenantId: string, stepId: string, now: Date): Promise<boolean> {
  await db.deleteFrom('outbox_mails').where('tenant_id', '=', tenantId).where('step_id', '=', stepId)
    .where('sent_at', 'is', null).where('failed_at', 'is', null)
    .where((eb) => eb.or([eb('lease_expires_at', 'is', null), eb('lease_expires_at', '<', now)]))
    .execute()
  const held = await db.selectFrom('outbox_mails').select('id').where('tenant_id', '=', tenantId).where('step_id', '=', stepId)
    .where('sent_at', 'is', null).where('failed_at', 'is', null).executeTakeFirst()
  return held === undefined
}
