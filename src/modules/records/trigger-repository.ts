import { sql, type CompiledQuery, type RawBuilder } from '../../db/kysely.js'
import type { DB } from '../../db/connect.js'
import type { JsonObject } from '../../db/database.js'
import { newId } from '../../lib/ids.js'
import { WITHDRAWN } from '../../lib/withdrawn-calls.js'
import { insertActivity } from '../activities/repository.js'
import { chainTooDeep, type ChainWriter } from '../instances/chain.js'
import type { RecordTable } from './schemas.js'

export interface RecordChange {
  tenantId: string
  table: RecordTable
  recordId: string
  event: 'create' | 'update'
  changedFields: string[]
  /** The service whose apiClaim made the change: its own triggers do not fire again. */
  byServiceId?: string | undefined
  /** Who wrote, when not a person: its deliveries are one further down its chain, and none fire past the bound (chain.ts). */
  writer?: ChainWriter | undefined
  now: Date
}

export interface QueuedTrigger {
  deliveryId: string
  serviceId: string
  serviceName: string
}

const MODULE = { properties: 'property', addresses: 'address' } as const

/**
 * Whether a trigger of the service matches a change: its module and event, and a watched field among
 * those whose value changed (no watched fields: any change). The one rule for queueing a call
 * (queueTriggeredDeliveries) and for keeping one queued (triggerStillWants).
 */
function triggerMatches(serviceId: RawBuilder<unknown>, module: unknown, event: unknown, changedFields: RawBuilder<unknown>) {
  return sql<boolean>`exists (
    select 1 from service_triggers tr
    where tr.service_id = ${serviceId} and tr.module = ${module} and ${event} = any (tr.events)
      and (cardinality(tr.fields) = 0 or tr.fields && ${changedFields}))`
}

/**
 * Whether one of its service's triggers still matches the change a trigger's delivery was queued
 * for (`alias` names the deliveries row), as queueTriggeredDeliveries matched it: deleting or changing
 * a trigger cancels the calls no trigger asks for any more (cancelUnwantedDeliveries), and those
 * already claimed then are not made again (claim-deliveries.ts, replay, recovery).
 */
export function triggerStillWants(alias: string) {
  const column = (name: string) => sql.ref(`${alias}.${name}`)
  return triggerMatches(column('service_id'), sql`(case when ${column('property_id')} is not null then 'property' else 'address' end)`,
    column('event'), sql`coalesce(${column('changed_fields')}, '{}')`)
}

/** An active service whose trigger matches a change, with its parameters' defaults. */
export interface TriggeredService {
  id: string
  name: string
  defaults: JsonObject
}

/**
 * The read of queueTriggeredDeliveries: the services whose triggers match the change, locked FOR KEY
 * SHARE (see there); none for an update that changed nothing. Apart, so that a record write sends it
 * together with its other reads (src/modules/records/watchers.ts).
 */
export function triggeredServicesStatement(db: DB, change: RecordChange): CompiledQuery<TriggeredService> | undefined {
  if (change.changedFields.length === 0 && change.event !== 'create') return undefined
  const changed = [...change.changedFields].sort()
  return sql<TriggeredService>`
    select s.id, s.name,
      coalesce((select jsonb_object_agg(p.name, p.default_value) from service_parameters p
                where p.service_id = s.id and p.default_value is not null), '{}') as defaults
    from marketplace_services s
    join service_activations a on a.service_id = s.id and a.tenant_id = ${change.tenantId}
    where s.active and s.id is distinct from ${change.byServiceId ?? null}::uuid
      and ${triggerMatches(sql.ref('s.id'), MODULE[change.table], change.event, sql`${changed}::text[]`)}
    order by s.id
    for key share of s
  `.compile(db)
}

/**
 * Queues one delivery per active service this tenant has activated whose trigger matches the change:
 * its module and event, and a watched field among those whose value changed (no watched fields: any
 * change, a create being one even without fields). `read`: the services triggeredServicesStatement
 * found, read already. Runs in the caller's transaction, so the record
 * write and its deliveries commit together. A writer too far down its chain (chain.ts) fires none:
 * the record's activity log says which would have.
 *
 * The services are read FOR KEY SHARE, the lock the deliveries' foreign key takes anyway, only
 * sooner: a service the operator is deleting (FOR UPDATE) is waited for and then read as gone,
 * where the foreign key failed the record's write (409) once the delete had committed.
 */
export async function queueTriggeredDeliveries(db: DB, change: RecordChange, read?: TriggeredService[]): Promise<QueuedTrigger[]> {
  const statement = read ? undefined : triggeredServicesStatement(db, change)
  if (!read && !statement) return []
  const changed = [...change.changedFields].sort()
  const tooDeep = change.writer && chainTooDeep(change.writer.chainDepth, 'that writer')
  const services = read ?? (await db.executeQuery<TriggeredService>(statement!)).rows
  if (services.length === 0) return []
  if (tooDeep) {
    await insertActivity(db, {
      tenant_id: change.tenantId, id: newId(change.now.getTime()), kind: 'triggersNotFired',
      message: `The change of ${changed.join(', ')} by ${change.writer!.says} fired no webhook triggers (${services.map((s) => s.name).join(', ')}): ${tooDeep}.`,
      property_id: change.table === 'properties' ? change.recordId : null, address_id: change.table === 'addresses' ? change.recordId : null,
      data: { serviceIds: services.map((s) => s.id), changedFields: changed }, created_at: change.now
    })
    return []
  }
  const queued = services.map((service) => ({ deliveryId: newId(change.now.getTime()), serviceId: service.id, serviceName: service.name }))
  await db.insertInto('deliveries').values(services.map((service, index) => ({
    tenant_id: change.tenantId,
    id: queued[index]!.deliveryId,
    service_id: service.id,
    source: 'trigger' as const,
    property_id: change.table === 'properties' ? change.recordId : null,
    address_id: change.table === 'addresses' ? change.recordId : null,
    event: change.event,
    changed_fields: changed,
    parameters: JSON.stringify(service.defaults),
    next_attempt_at: change.now,
    chain_depth: change.writer ? change.writer.chainDepth + 1 : 0,
    // Its provider's write-back continues the writer's chain: what it starts counts against that chain (chain.ts).
    chain_root_id: change.writer?.rootId ?? null
  }))).execute()
  return queued
}

/**
 * Cancels the record's trigger deliveries no worker has claimed, saying why, in the delete's
 * transaction; a claimed one finishes its call, and the claim does not call again (claim-deliveries.ts).
 */
export async function cancelTriggeredDeliveries(db: DB, table: RecordTable, tenantId: string, recordId: string, now: Date): Promise<number> {
  const result = await cancelTriggeredStatement(db, table, tenantId, recordId, now).executeTakeFirst()
  return Number(result.numUpdatedRows)
}

/** The statement of cancelTriggeredDeliveries, on its own for a look at its plan. */
export function cancelTriggeredStatement(db: DB, table: RecordTable, tenantId: string, recordId: string, now: Date) {
  return db.updateTable('deliveries')
    .set({ status: 'cancelled', finished_at: now, last_error: WITHDRAWN.recordDeleted(MODULE[table]) })
    // Constants, so that a kept plan can still prove the partial index of pending trigger deliveries (migration 0025).
    .where('tenant_id', '=', tenantId).where('source', '=', sql.lit('trigger')).where('status', '=', sql.lit('pending'))
    .where(table === 'properties' ? 'property_id' : 'address_id', '=', recordId)
}

/**
 * Cancels the service's trigger deliveries no worker has claimed that none of its triggers matches
 * any more, saying why: run in the transaction that deletes or changes one of its triggers. A claimed
 * one finishes its call, and the claim does not call again (claim-deliveries.ts).
 */
export async function cancelUnwantedDeliveries(db: DB, serviceId: string, now: Date): Promise<number> {
  const result = await cancelUnwantedStatement(db, serviceId, now).executeTakeFirst()
  return Number(result.numUpdatedRows)
}

/** The statement of cancelUnwantedDeliveries, on its own for a look at its plan. */
export function cancelUnwantedStatement(db: DB, serviceId: string, now: Date) {
  return db.updateTable('deliveries as d')
    .set({ status: 'cancelled', finished_at: now, last_error: WITHDRAWN.triggerGone })
    // Constants, so that a kept plan can still prove the partial index of pending trigger deliveries (migration 0027).
    .where('d.service_id', '=', serviceId).where('d.source', '=', sql.lit('trigger')).where('d.status', '=', sql.lit('pending'))
    .where(sql<boolean>`not ${triggerStillWants('d')}`)
}

/**
 * Cancels the tenant's trigger deliveries of the service no worker has claimed, saying why: run in
 * the transaction that deactivates the service for the tenant. A claimed one finishes its call, and
 * the claim does not call again (claim-deliveries.ts).
 */
export async function cancelWithdrawnDeliveries(db: DB, tenantId: string, serviceId: string, now: Date): Promise<number> {
  const result = await cancelWithdrawnStatement(db, tenantId, serviceId, now).executeTakeFirst()
  return Number(result.numUpdatedRows)
}

/** The statement of cancelWithdrawnDeliveries, on its own for a look at its plan. */
export function cancelWithdrawnStatement(db: DB, tenantId: string, serviceId: string, now: Date) {
  return db.updateTable('deliveries')
    .set({ status: 'cancelled', finished_at: now, last_error: WITHDRAWN.deactivated })
    // Constants, so that a kept plan can still prove the partial index of pending trigger deliveries (migration 0027).
    .where('service_id', '=', serviceId).where('source', '=', sql.lit('trigger')).where('status', '=', sql.lit('pending'))
    .where('tenant_id', '=', tenantId)
}
