import { sql } from '../../db/kysely.js'
import { eachKey } from '../../db/by-keys.js'
import type { DB } from '../../db/connect.js'
import type { JsonObject } from '../../db/database.js'
import type { PageRequest } from '../../lib/pagination.js'
import type { ExpectedVersions } from '../../lib/versioning.js'
import type { FieldsPatch } from './fields.js'
import type { RecordTable } from './schemas.js'

/** The column that links a process instance or an activity to a record of this table. */
export const LINK_COLUMN = { properties: 'property_id', addresses: 'address_id' } as const

export interface RecordFilter {
  maintainerUserId?: string | undefined
  fieldsContain?: JsonObject | undefined
}

export interface RecordChanges {
  maintainerUserId?: string | null | undefined
  fields: FieldsPatch
  /** The versions one of which the record must be at; undefined: any. */
  expectedVersions?: ExpectedVersions
  now: Date
}

export function findRecord(db: DB, table: RecordTable, tenantId: string, id: string) {
  return db.selectFrom(table).selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst()
}

/** Ids of the next limit + 1 records and the size of their fields, so that a page can end at its byte budget. */
export function listRecordSizes(db: DB, table: RecordTable, tenantId: string, page: PageRequest, filter: RecordFilter) {
  return recordSizesPage(db, table, tenantId, page, filter).execute()
}

/** The statement of listRecordSizes, on its own for a look at its plan. */
export function recordSizesPage(db: DB, table: RecordTable, tenantId: string, page: PageRequest, filter: RecordFilter) {
  let query = db.selectFrom(table).select(['id', 'fields_bytes']).where('tenant_id', '=', tenantId).where(matching(filter)).orderBy('id').limit(page.limit + 1)
  if (page.after) query = query.where('id', '>', page.after)
  return query
}

/** The filter as a condition on a record's columns (unqualified); true when it asks for nothing. */
function matching(filter: RecordFilter) {
  const conditions = []
  if (filter.maintainerUserId) conditions.push(sql`maintainer_user_id = ${filter.maintainerUserId}`)
  if (filter.fieldsContain) conditions.push(sql`fields @> ${JSON.stringify(filter.fieldsContain)}::jsonb`)
  return conditions.length === 0 ? sql<boolean>`true` : sql<boolean>`(${sql.join(conditions, sql` and `)})`
}

/**
 * Bytes of a record's fields per slice: at most 32 Ki characters, a string of at most 64 KiB, well
 * below V8's large-object size.
 */
const FIELDS_SLICE_BYTES = 32_768

/** One slice of a record's fields as UTF-8 JSON text (cut anywhere, even inside a character), with the record's other columns. */
export interface RecordSliceRow {
  id: string
  maintainer_user_id: string | null
  version: number
  created_at: Date
  updated_at: Date
  ord: number
  slice: Uint8Array
}

/**
 * These records (of the tenant, in id order) that still match the filter, with their fields as the JSON text Postgres prints, cut
 * into slices: each slice is small and the next minor GC frees it, where one large string per
 * record lives until a full GC. The text is printed once per record (materialized), not per slice,
 * and cut by bytes: cut by characters, each slice walked the text from its start, and a record whose
 * numbers Postgres prints long (1e308 as 309 digits: 256 KiB of fields, 11 MB of text) took its page
 * past the statement timeout. Each record is looked up by its key (eachKey): as `id = any(…)`, a page
 * of fifty walked all of the tenant's records when the table had no statistics. The filter is checked
 * again here: a record whose maintainer or fields changed since the page was sized (listRecordSizes)
 * no longer matches it, and a filtered list sent it as it is now.
 */
export async function findRecordSlices(db: DB, table: RecordTable, tenantId: string, ids: string[], filter: RecordFilter): Promise<RecordSliceRow[]> {
  if (ids.length === 0) return []
  const { rows } = await recordSlices(table, tenantId, ids, filter).execute(db)
  return rows
}

/** The statement of findRecordSlices, on its own for a look at its plan. */
export function recordSlices(table: RecordTable, tenantId: string, ids: string[], filter: RecordFilter = {}) {
  return sql<RecordSliceRow>`
    with r as materialized (
      select x.id, x.maintainer_user_id, x.version, x.created_at, x.updated_at, convert_to(x.fields::text, 'UTF8') as bytes
      from ${eachKey(ids.map((id) => ({ tenant_id: tenantId, id })))}
      cross join lateral (select * from ${sql.table(table)} t where t.tenant_id = k.tenant_id and t.id = k.id and ${matching(filter)} offset 0) x
    )
    select r.id, r.maintainer_user_id, r.version, r.created_at, r.updated_at, s.ord,
      substring(r.bytes from (s.ord - 1) * ${FIELDS_SLICE_BYTES} + 1 for ${FIELDS_SLICE_BYTES}) as slice
    from r cross join lateral generate_series(1, greatest(1, ceil(octet_length(r.bytes)::numeric / ${FIELDS_SLICE_BYTES})::int)) as s(ord)
    order by r.id, s.ord`
}

/** Inserts the record; undefined when its idempotency key is taken (by a create that committed, or once the one in progress does). */
export function insertRecord(
  db: DB, table: RecordTable,
  row: {
    tenant_id: string; id: string; maintainer_user_id: string | null; fields: JsonObject; created_at: Date
    idempotency_key: string | null; idempotency_digest: string | null
  }
) {
  return db.insertInto(table).values({ ...row, fields: JSON.stringify(row.fields), updated_at: row.created_at })
    .onConflict((oc) => oc.columns(['tenant_id', 'idempotency_key']).where('idempotency_key', 'is not', null).doNothing())
    .returningAll().executeTakeFirst()
}

/** The record a create with this Idempotency-Key made. */
export function findRecordByKey(db: DB, table: RecordTable, tenantId: string, key: string) {
  return db.selectFrom(table).selectAll().where('tenant_id', '=', tenantId).where('idempotency_key', '=', key).executeTakeFirst()
}

/**
 * Applies the merge patch with jsonb `-` and `||`, so concurrent patches of different keys all survive.
 * The locking subquery returns the very row version the update replaces: its fields are the "before".
 * It takes the lock the update takes (FOR NO KEY UPDATE): a start naming the record checks its foreign
 * key (FOR KEY SHARE) without waiting for the write.
 * A patch that leaves the fields and the maintainer as they were keeps the version and updatedAt.
 * Undefined when the record is missing or at none of the expected versions.
 */
export async function patchRecord(db: DB, table: RecordTable, tenantId: string, id: string, changes: RecordChanges) {
  const versions = changes.expectedVersions
  const versionCheck = versions === undefined ? sql`` : sql`and r.version in (${sql.join(versions)})`
  const maintainer = changes.maintainerUserId === undefined ? sql`` : sql`maintainer_user_id = ${changes.maintainerUserId},`
  const sameMaintainer = changes.maintainerUserId === undefined ? sql`true` : sql`r.maintainer_user_id is not distinct from ${changes.maintainerUserId}::uuid`
  const fields = sql`(r.fields - patch.remove) || patch.set`
  const unchanged = sql`(${fields} = r.fields and ${sameMaintainer})`
  const result = await sql<RecordRowWithBefore>`
    update ${sql.table(table)} as r
    set ${maintainer}
      fields = case when ${unchanged} then r.fields else ${fields} end,
      version = case when ${unchanged} then r.version else r.version + 1 end,
      updated_at = case when ${unchanged} then r.updated_at else ${changes.now} end
    from (select id, fields from ${sql.table(table)} where tenant_id = ${tenantId} and id = ${id} for no key update) as locked,
      (select ${changes.fields.remove}::text[] as remove, ${JSON.stringify(changes.fields.set)}::jsonb as set) as patch
    where r.tenant_id = ${tenantId} and r.id = locked.id ${versionCheck}
    returning r.*, locked.fields as before_fields`.execute(db)
  return result.rows[0]
}

/**
 * Locks these records for a write in the one order every transaction that locks several keeps:
 * properties before addresses (the order of process_instances' foreign-key checks), each by
 * (tenant_id, id), so no two wait for each other in a circle. The union takes its branches in turn,
 * each locking its rows as its sort returns them. FOR NO KEY UPDATE, as the write itself takes: a
 * start's foreign-key check (FOR KEY SHARE) of the same records neither waits for it nor crosses it.
 * Returns the records found, as "table tenant_id id" keys (lockedRecordKey).
 */
export async function lockRecordsInOrder(db: DB, refs: { table: RecordTable; tenant_id: string; id: string }[]): Promise<Set<string>> {
  if (refs.length === 0) return new Set()
  const of = (table: RecordTable) => refs.filter((r) => r.table === table)
  const [properties, addresses] = [of('properties'), of('addresses')]
  const { rows } = await sql<{ record_table: RecordTable; tenant_id: string; id: string }>`
    with p as materialized (
      select tenant_id, id from properties
      where (tenant_id, id) in (select * from unnest(${properties.map((r) => r.tenant_id)}::uuid[], ${properties.map((r) => r.id)}::uuid[]))
      order by tenant_id, id for no key update
    ), a as materialized (
      select tenant_id, id from addresses
      where (tenant_id, id) in (select * from unnest(${addresses.map((r) => r.tenant_id)}::uuid[], ${addresses.map((r) => r.id)}::uuid[]))
      order by tenant_id, id for no key update
    )
    select 'properties' as record_table, tenant_id, id from p
    union all
    select 'addresses', tenant_id, id from a`.execute(db)
  return new Set(rows.map((r) => lockedRecordKey(r.record_table, r.tenant_id, r.id)))
}

export function lockedRecordKey(table: RecordTable, tenantId: string, id: string): string {
  return `${table} ${tenantId} ${id}`
}

type RecordRowWithBefore = Awaited<ReturnType<typeof findRecord>> & { before_fields: JsonObject }

/** Deletes the record if it is at one of the expected versions (undefined: any); false when it is missing or at another. */
export async function deleteRecord(db: DB, table: RecordTable, tenantId: string, id: string, expectedVersions?: ExpectedVersions): Promise<boolean> {
  let query = db.deleteFrom(table).where('tenant_id', '=', tenantId).where('id', '=', id)
  if (expectedVersions !== undefined) query = query.where('version', 'in', expectedVersions)
  const result = await query.executeTakeFirst()
  return result.numDeletedRows > 0n
}

/** A few of the process instances that link the record, to name in a 409. */
export async function findLinkingInstanceIds(db: DB, table: RecordTable, tenantId: string, id: string, limit = 5) {
  const rows = await db.selectFrom('process_instances').select('id').where('tenant_id', '=', tenantId)
    .where(LINK_COLUMN[table], '=', id).orderBy('id').limit(limit).execute()
  return rows.map((row) => row.id)
}

/** A write that names a row which no longer exists, or a delete of a row still referenced. */
export function isForeignKeyViolation(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === '23503'
}

/**
 * Holds the process of a write-back's call once it has ended, as a replay does (deliveries/repository.ts):
 * the retention removes only ended processes, locked first (remove-old-history.ts), so a write-back
 * either keeps its call's process until it commits, or waits for the removal and then finds its call
 * gone, rather than logging an activity under a process the removal takes. A running process is not
 * held: the retention does not take it, and a lock would fail the API's changes to it (NOWAIT).
 */
export async function holdEndedProcessOfCall(db: DB, tenantId: string, deliveryId: string): Promise<void> {
  await sql`select 1 from process_instances p
    where p.tenant_id = ${tenantId} and p.id = (select d.instance_id from deliveries d where d.tenant_id = ${tenantId} and d.id = ${deliveryId})
      and p.status <> 'running'
    for key share of p`.execute(db)
}

/** A delivery's place in its chain (chain.ts), and its process and step with the process's place, for a step's delivery. */
export function findDeliveryWriter(db: DB, tenantId: string, deliveryId: string) {
  return db.selectFrom('deliveries as d')
    .leftJoin('process_instances as p', (join) => join.onRef('p.tenant_id', '=', 'd.tenant_id').onRef('p.id', '=', 'd.instance_id'))
    .select(['d.chain_depth', 'd.chain_root_id', 'd.step_id', 'p.id as instance_id', 'p.chain_depth as instance_depth', 'p.chain_root_id as instance_root'])
    .where('d.tenant_id', '=', tenantId).where('d.id', '=', deliveryId)
    .executeTakeFirst()
}
