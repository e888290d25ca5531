import type { DeliveryAttemptRow, DeliveryRow } from '../../db/database.js'
import type { DB } from '../../db/connect.js'
import { sql, type RawBuilder } from '../../db/kysely.js'
import { triggerStillWants } from '../records/trigger-repository.js'
import type { PageRequest } from '../../lib/pagination.js'
import type { ListDeliveriesQuery } from './schemas.js'

/** The statuses the index of deliveries that ended badly holds (migration 0037). */
const ENDED_BADLY: readonly string[] = ['failed', 'cancelled']

/** Newest first. */
export async function listDeliveries(db: DB, tenantId: string, page: PageRequest, filter: ListDeliveriesQuery): Promise<DeliveryRow[]> {
  const byOutcome = deliveriesByOutcome(tenantId, page, filter)
  if (!byOutcome) return deliveriesPage(db, tenantId, page, filter).execute()
  // In the order the keys were found; sorted again, as a statement without `order by` promises none.
  return (await byOutcome.execute(db)).rows.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
}

/**
 * The page of deliveries with an attempt of an outcome other than `succeeded`, found through the
 * index of those attempts (migration 0038) one delivery after another, newest first: each step of the
 * recursion reads the next delivery id below the last one, and the page stops at its limit. Joined to
 * the deliveries and filtered, as `exists` was, the attempts were all read and sorted, or each
 * delivery of the tenant was matched against all of them: a page of `retry` took 0.7 s, and 20 s on
 * the plan a prepared statement kept, without statistics, for 600,000 deliveries; here 2 ms. A filter
 * by process or step, which finds a handful of deliveries by its own index, a status that ended badly,
 * whose index holds only those (a walk of every retried delivery for the few that failed would be the
 * longer way), and `succeeded`, which most deliveries have, keep that statement (undefined).
 */
export function deliveriesByOutcome(tenantId: string, page: PageRequest, filter: ListDeliveriesQuery) {
  const outcome = filter.outcome
  const endedBadly = filter.status !== undefined && ENDED_BADLY.includes(filter.status)
  if (!outcome || outcome === 'succeeded' || filter.instanceId || filter.stepId || endedBadly) return undefined
  // The newest delivery id with an attempt of the outcome, below `id` when one is given.
  const below = (id?: RawBuilder<string> | string) => sql<string>`(select a.delivery_id from delivery_attempts a
    where a.tenant_id = ${tenantId} and a.outcome = ${sql.lit(outcome)}${id === undefined ? sql`` : sql` and a.delivery_id < ${id}`}
    order by a.delivery_id desc limit 1)`
  const conditions = [sql`d.tenant_id = ${tenantId}`, sql`d.id = k.id`]
  if (filter.serviceId) conditions.push(sql`d.service_id = ${filter.serviceId}`)
  if (filter.status) conditions.push(sql`d.status = ${filter.status}`)
  return sql<DeliveryRow>`with recursive k(id) as (
      select ${below(page.after)}
      union all
      select ${below(sql<string>`k.id`)} from k where k.id is not null
    )
    select d.* from k cross join lateral (select * from deliveries d where ${sql.join(conditions, sql` and `)} offset 0) d
    limit ${page.limit + 1}`
}

/** The statement of listDeliveries, on its own for a look at its plan. */
export function deliveriesPage(db: DB, tenantId: string, page: PageRequest, filter: ListDeliveriesQuery) {
  let query = db.selectFrom('deliveries').selectAll().where('tenant_id', '=', tenantId).orderBy('id', 'desc').limit(page.limit + 1)
  if (page.after) query = query.where('id', '<', page.after)
  if (filter.instanceId) query = query.where('instance_id', '=', filter.instanceId)
  if (filter.stepId) query = query.where('step_id', '=', filter.stepId)
  if (filter.serviceId) query = query.where('service_id', '=', filter.serviceId)
  // A status of the partial index as a literal (one of the schema's values): as a parameter, the plan a
  // prepared statement keeps could not take the index, whose condition names the statuses.
  if (filter.status && ENDED_BADLY.includes(filter.status)) query = query.where('status', '=', sql.lit(filter.status as 'failed'))
  else if (filter.status) query = query.where('status', '=', filter.status as 'pending')
  const outcome = filter.outcome
  if (outcome) {
    query = query.where(({ exists, selectFrom }) => exists(selectFrom('delivery_attempts as a').select('a.id')
      .whereRef('a.tenant_id', '=', 'deliveries.tenant_id').whereRef('a.delivery_id', '=', 'deliveries.id')
      .where('a.outcome', '=', outcome)))
  }
  return query
}

export function findDelivery(db: DB, tenantId: string, id: string) {
  return db.selectFrom('deliveries').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst()
}

/** A delivery lists at most this many of its attempts, its latest: replays and retries add rounds without end. */
export const ATTEMPTS_SHOWN = 100

/**
 * The latest ATTEMPTS_SHOWN attempts of each of these deliveries and one more where there are more (to
 * tell that some were left out), oldest first: by round and number, through the index of both (0039).
 */
export async function listAttempts(db: DB, tenantId: string, deliveryIds: string[]): Promise<DeliveryAttemptRow[]> {
  if (deliveryIds.length === 0) return []
  const { rows } = await sql<DeliveryAttemptRow>`
    select a.* from unnest(${deliveryIds}::uuid[]) as d(id)
    cross join lateral (
      select * from delivery_attempts a where a.tenant_id = ${tenantId} and a.delivery_id = d.id
      order by a.round desc, a.attempt_number desc limit ${ATTEMPTS_SHOWN + 1}
    ) a
    order by a.delivery_id, a.round, a.attempt_number`.execute(db)
  return rows
}

/** How many attempts each of these deliveries has (those with more than ATTEMPTS_SHOWN: a count reads all of them). */
export async function countAttempts(db: DB, tenantId: string, deliveryIds: string[]): Promise<Map<string, number>> {
  if (deliveryIds.length === 0) return new Map()
  const { rows } = await sql<{ delivery_id: string; n: number }>`
    select a.delivery_id, count(*)::int as n from delivery_attempts a
    where a.tenant_id = ${tenantId} and a.delivery_id = any(${deliveryIds}::uuid[])
    group by a.delivery_id`.execute(db)
  return new Map(rows.map((r) => [r.delivery_id, r.n]))
}

/** Holds the process of a delivery (if it has one) against its removal, FOR KEY SHARE, for the transaction. */
export async function holdDeliveryProcess(db: DB, tenantId: string, deliveryId: string): Promise<void> {
  await sql`select 1 from process_instances p
    where p.tenant_id = ${tenantId} and p.id = (select d.instance_id from deliveries d where d.tenant_id = ${tenantId} and d.id = ${deliveryId})
    for key share of p`.execute(db)
}

export function lockDelivery(db: DB, tenantId: string, id: string) {
  return db.selectFrom('deliveries').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).forUpdate().executeTakeFirst()
}

/** Whether a trigger delivery's record is still there (a delete cancels its pending deliveries, not its finished ones). */
export async function triggerRecordExists(db: DB, row: Pick<DeliveryRow, 'tenant_id' | 'property_id' | 'address_id'>): Promise<boolean> {
  const [table, id] = row.property_id !== null ? ['properties', row.property_id] as const : ['addresses', row.address_id] as const
  if (id === null) return true
  return (await db.selectFrom(table).select('id').where('tenant_id', '=', row.tenant_id).where('id', '=', id).executeTakeFirst()) !== undefined
}

/** Whether one of its service's triggers still matches a trigger delivery's change (a trigger deleted or changed since may not). */
export async function triggerStillWanted(db: DB, row: Pick<DeliveryRow, 'tenant_id' | 'id'>): Promise<boolean> {
  const found = await db.selectFrom('deliveries as d').select('d.id')
    .where('d.tenant_id', '=', row.tenant_id).where('d.id', '=', row.id).where(triggerStillWants('d')).executeTakeFirst()
  return found !== undefined
}

export function findStepState(db: DB, tenantId: string, stepId: string) {
  return db.selectFrom('instance_steps').select(['state', 'name']).where('tenant_id', '=', tenantId).where('id', '=', stepId).executeTakeFirst()
}

/** A finished delivery goes out again as a new round: the same deliveryId and Idempotency-Key. */
export function replayDelivery(db: DB, tenantId: string, id: string, now: Date) {
  return db.updateTable('deliveries')
    .set((eb) => ({
      status: 'pending', round: eb('round', '+', 1), attempt_count: 0, next_attempt_at: now,
      last_status_code: null, last_error: null, lease_owner: null, lease_expires_at: null, finished_at: null
    }))
    .where('tenant_id', '=', tenantId).where('id', '=', id).where('status', 'in', ['succeeded', 'failed', 'cancelled'])
    .execute()
}

/**
 * Failed deliveries of a service that a recovery may queue again: a record-change delivery whose record is still there, or the
 * delivery of a webhook step that is still failed in a running process, at most `limit`: those that gave
 * up longest ago first. One a recovery queued that failed again has given up since, and waits behind
 * the rest: while the provider still fails fast, each call reaches further, not the same oldest ones.
 */
export function findRecoverable(db: DB, tenantId: string, serviceId: string, since: Date, limit: number) {
  return db.selectFrom('deliveries as d')
    .leftJoin('instance_steps as st', (j) => j.onRef('st.tenant_id', '=', 'd.tenant_id').onRef('st.id', '=', 'd.step_id'))
    .leftJoin('process_instances as i', (j) => j.onRef('i.tenant_id', '=', 'd.tenant_id').onRef('i.id', '=', 'd.instance_id'))
    .select(['d.id', 'd.source', 'd.instance_id', 'd.step_id'])
    .where('d.tenant_id', '=', tenantId).where('d.service_id', '=', serviceId)
    .where('d.status', '=', 'failed').where('d.finished_at', '>=', since)
    .where((eb) => eb.or([
      // A trigger's whose record is still there (deleting it cancels its pending calls, not its failed ones),
      // and that a trigger of the service still watches (deleting or changing one does the same).
      eb.and([
        eb('d.source', '=', 'trigger'),
        triggerStillWants('d'),
        eb.or([eb('d.property_id', 'is', null), eb.exists(eb.selectFrom('properties as p').select('p.id').whereRef('p.tenant_id', '=', 'd.tenant_id').whereRef('p.id', '=', 'd.property_id'))]),
        eb.or([eb('d.address_id', 'is', null), eb.exists(eb.selectFrom('addresses as a').select('a.id').whereRef('a.tenant_id', '=', 'd.tenant_id').whereRef('a.id', '=', 'd.address_id'))])
      ]),
      eb.and([eb('st.state', '=', 'failed'), eb('i.status', '=', 'running')])
    ]))
    .orderBy('d.finished_at').orderBy('d.id').limit(limit).execute()
}
