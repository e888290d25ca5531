import type { DB } from '../../db/connect.js'
import { sql, type RawBuilder } from '../../db/kysely.js'
import type { NewTenantRow, TenantUpdate } from '../../db/database.js'
import { isDeadlock, isStatementTimeout } from '../../db/errors.js'
import type { PageRequest } from '../../lib/pagination.js'
import { isForeignKeyViolation } from '../records/repository.js'

export function findTenantById(db: DB, id: string) {
  return db.selectFrom('tenants').selectAll().where('id', '=', id).executeTakeFirst()
}

export function listTenants(db: DB, page: PageRequest) {
  let query = db.selectFrom('tenants').selectAll().orderBy('id').limit(page.limit + 1)
  if (page.after) query = query.where('id', '>', page.after)
  return query.execute()
}

export function insertTenant(db: DB, row: NewTenantRow) {
  return db.insertInto('tenants').values(row).returningAll().executeTakeFirstOrThrow()
}

/** The tenant row, locked as an update of its columns locks it: rows holding their key to it do not wait. */
export function lockTenantForChange(trx: DB, id: string) {
  return trx.selectFrom('tenants').selectAll().where('id', '=', id).forNoKeyUpdate().executeTakeFirst()
}

/**
 * Whether the tenant is being deleted, its row held against a deletion's mark (an update) and its
 * delete until the transaction ends; undefined when there is no such tenant.
 */
export function lockTenantForKey(trx: DB, id: string) {
  return trx.selectFrom('tenants').select('deleting_since').where('id', '=', id).forShare().executeTakeFirst()
}

export function updateTenant(db: DB, id: string, changes: TenantUpdate) {
  return db.updateTable('tenants').set(changes).where('id', '=', id).returningAll().executeTakeFirst()
}

/**
 * Marks the tenant as being deleted (`deleting_since`, kept from a deletion begun before), in a
 * transaction of its own, committed before any of its rows goes; false when there is no such tenant.
 * From then on its keys and apiClaims answer as a deleted tenant's (src/modules/auth/repository.ts),
 * and no process of it starts (src/modules/instances/repository.ts): its deletion's parts are not
 * undone by new rows while they go, and the tenant does not see its data vanish piece by piece.
 */
export async function markDeleting(db: DB, id: string, now: Date): Promise<boolean> {
  const row = await db.updateTable('tenants').set({ deleting_since: sql<Date>`coalesce(deleting_since, ${now})` })
    .where('id', '=', id).returning('id').executeTakeFirst()
  return row !== undefined
}

/**
 * Deletes the tenant and everything it owns; false when there is no such tenant. A tenant larger than
 * one part (more than PART_ROWS rows in one of its tables) first loses its bulk in parts (`deleteInParts`),
 * each a transaction of its own well within the statement timeout; then the last transaction
 * (`deleteTenantAtOnce`) deletes what is left and the tenant itself, as it deletes a smaller tenant
 * whole. In one transaction, a million rows overran the statement timeout on every try, and such a
 * tenant could not be deleted at all. A deletion cut off in between leaves the tenant with part of
 * what it owned; deleting it again finishes it, as a worker does once it has been left a while
 * (src/scheduler/finish-tenant-deletions.ts). `signal` stops it between two parts (its reason thrown):
 * a worker that is stopping does not hold its stop for a large tenant's rest.
 */
export async function deleteTenant(db: DB, id: string, signal?: AbortSignal): Promise<boolean> {
  if (await isLarge(db, id)) await deleteInParts(db, id, signal)
  signal?.throwIfAborted()
  return deleteTenantAtOnce(db, id)
}

/**
 * Tenants whose deletion began at `before` or earlier and has not ended, longest marked first, at most
 * `limit`, but those in `skip`: those a deletion left marked when it was cut off (a restart, a 503), or
 * one still going.
 */
export async function tenantsMarkedSince(db: DB, before: Date, limit: number, skip: readonly string[] = []): Promise<{ id: string; deleting_since: Date }[]> {
  let query = db.selectFrom('tenants').select(['id', 'deleting_since'])
    .where('deleting_since', 'is not', null).where('deleting_since', '<=', before)
  if (skip.length > 0) query = query.where('id', 'not in', skip)
  const rows = await query.orderBy('deleting_since').orderBy('id').limit(limit).execute()
  return rows.map((row) => ({ id: row.id, deleting_since: row.deleting_since! }))
}

/** Rows of one part of a large tenant's deletion: 1,000 activities, records, processes' steps, … went in 10 to 50 ms. */
export const PART_ROWS = 1000

/**
 * The tables a large tenant loses in parts, in an order the foreign keys allow (what names a row goes
 * before it), each with the rows a row of it takes along by the cascades (`weight`): a part takes
 * rows up to PART_ROWS (or fewer, `deleteInParts`) of their weights together, and one row whatever its weight.
 */
const PARTS: { table: 'activities' | 'outbox_mails' | 'autostart_runs' | 'process_instances' | 'deliveries' | 'process_templates' | 'properties' | 'addresses' | 'users'; weight?: RawBuilder<number> }[] = [
  { table: 'activities' },
  { table: 'outbox_mails' },
  { table: 'autostart_runs' },
  { table: 'process_instances', weight: sql`(select count(*) from instance_steps s where s.instance_id = t.id and s.tenant_id = t.tenant_id)` },
  { table: 'deliveries', weight: sql`(select count(*) from delivery_attempts a where a.tenant_id = t.tenant_id and a.delivery_id = t.id)` },
  { table: 'process_templates', weight: sql`(select count(*) from template_steps s where s.template_id = t.id and s.tenant_id = t.tenant_id)` },
  { table: 'properties' },
  { table: 'addresses' },
  { table: 'users' }
]

/** Whether one of the tenant's tables holds more than a part. */
async function isLarge(db: DB, id: string): Promise<boolean> {
  const tables = [...PARTS.map((p) => p.table), 'instance_steps', 'template_steps', 'delivery_attempts']
  const { rows } = await sql<{ large: boolean }>`select ${sql.join(tables.map((table) =>
    sql`exists (select 1 from ${sql.table(table)} where tenant_id = ${id} offset ${PART_ROWS})`), sql` or `)} as large`.execute(db)
  return rows[0]?.large === true
}

/**
 * Deletes the tenant's rows of the PARTS tables, part by part, table by table. A part that overran
 * the statement timeout is tried again with half as many rows, down to one, and the table's parts
 * stay that small: a user's part checks each user's foreign keys against the tenant's processes and
 * steps, which the parts before left dead until a vacuum (1,000 users after 5,000 processes took
 * 0.75 s). The tenant starts no process once marked (`markDeleting`), but a start or a worker's
 * batch that read it before may still commit a row that names one going (a process started on a
 * property): that fails the part's foreign key check, and the parts begin again from the first
 * table, which takes it; after a few such rounds the last transaction takes what is left. A part's
 * delete waits for changes to its rows in progress (an advance, a worker's batch) as the last
 * transaction's first delete does, and holds no lock on the tenant's row. A change that then waits
 * for a row the part deleted before (a batch locking the tenant's rows in another order) deadlocks
 * with it; the part chosen to end the deadlock is tried again (DEADLOCK_TRIES), after the change.
 */
async function deleteInParts(db: DB, id: string, signal?: AbortSignal): Promise<void> {
  for (let round = 0; round < 3; round++) {
    try {
      for (const part of PARTS) {
        let rows = PART_ROWS
        let deadlocks = 0
        for (;;) {
          signal?.throwIfAborted()
          const deleted = await db.transaction().execute(async (trx) => {
            await lockDeletion(trx, id)
            return deletePart(trx, id, part, rows)
          }).catch((error: unknown) => {
            if (isDeadlock(error) && ++deadlocks < DEADLOCK_TRIES) return undefined
            if (!isStatementTimeout(error) || rows <= 1) throw error
            rows = Math.ceil(rows / 2)
            return undefined
          })
          if (deleted === 0) break
        }
      }
      return
    } catch (error) {
      if (!isForeignKeyViolation(error)) throw error
    }
  }
}

/** How many deadlocks the parts of one table, or the last transaction, get over before the DELETE answers 409 (retry it). */
const DEADLOCK_TRIES = 5

/**
 * Waits for another deletion of the tenant's, holding it off until the transaction ends. Two deletions
 * at once (a retried DELETE, a second client) took the same parts, and the same rows in different
 * orders: a deadlock, answered 409. Taken by each part and by the last transaction, so that no two
 * of the tenant's deletions delete at once; the one that comes last finds the tenant gone (404).
 */
async function lockDeletion(trx: DB, id: string): Promise<void> {
  await sql`select pg_advisory_xact_lock(hashtextextended(${`tenant deletion ${id}`}, 0))`.execute(trx)
}

/** Deletes one part of the tenant's rows of the table, in id order, of `most` rows' weight; returns how many rows went (0: none were left). */
async function deletePart(db: DB, id: string, { table, weight = sql<number>`0` }: (typeof PARTS)[number], most: number): Promise<number> {
  const { rows } = await sql<{ id: string }>`
    with next as (
      select t.id, 1 + ${weight} as weight from ${sql.table(table)} t where t.tenant_id = ${id} order by t.id limit ${most}
    ), part as (
      select id from (select id, sum(weight) over (order by id) as rows, row_number() over (order by id) as n from next) counted
      where n = 1 or rows <= ${most}
    )
    delete from ${sql.table(table)} t using part where t.tenant_id = ${id} and t.id = part.id
    returning t.id
  `.execute(db)
  return rows.length
}

/**
 * Deletes the tenant and, by the foreign keys' cascades, everything it owns. Its processes go first,
 * then its templates: a process's steps reach the tenant only through their process, and a template's
 * steps through their template, and the foreign keys of their assignees and responsible users to
 * users would be checked when the cascade removes the users, before it came to the steps.
 *
 * The first delete waits for changes to the processes in progress (an advance, a worker's batch),
 * while processes may still start; the tenant's row, locked then, keeps any more from starting (a
 * new process's key to its tenant waits for it), and the second delete takes those that started
 * meanwhile. Locking the tenant first would instead deadlock with a change in progress that writes
 * an activity or a delivery (their keys to the tenant wait for the lock, the delete for the change).
 * A change that waits for a row the transaction deleted before deadlocks with it as with a part, and
 * the transaction chosen to end the deadlock is tried again (DEADLOCK_TRIES), after the change.
 */
async function deleteTenantAtOnce(db: DB, id: string): Promise<boolean> {
  for (let deadlocks = 1; ; deadlocks++) {
    try {
      return await deleteRestWithTenant(db, id)
    } catch (error) {
      if (!isDeadlock(error) || deadlocks >= DEADLOCK_TRIES) throw error
    }
  }
}

/** One try of deleteTenantAtOnce: the tenant's processes, templates and the tenant, in one transaction. */
function deleteRestWithTenant(db: DB, id: string): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    await lockDeletion(trx, id)
    const deleteProcesses = () => trx.deleteFrom('process_instances').where('tenant_id', '=', id).execute()
    await deleteProcesses()
    if (!(await trx.selectFrom('tenants').select('id').where('id', '=', id).forUpdate().executeTakeFirst())) return false
    await deleteProcesses()
    await trx.deleteFrom('process_templates').where('tenant_id', '=', id).execute()
    const result = await trx.deleteFrom('tenants').where('id', '=', id).executeTakeFirst()
    return result.numDeletedRows > 0n
  })
}

export function findWebIdOwner(db: DB, webId: string) {
  return db.selectFrom('tenants').select('id').where('web_id', '=', webId).executeTakeFirst()
}

export function insertApiKey(db: DB, row: { tenant_id: string; id: string; name: string; key_prefix: string; key_hash: string }) {
  return db.insertInto('api_keys').values(row).returningAll().executeTakeFirstOrThrow()
}

export function listApiKeys(db: DB, tenantId: string, page: PageRequest) {
  let query = db.selectFrom('api_keys').selectAll().where('tenant_id', '=', tenantId).orderBy('id').limit(page.limit + 1)
  if (page.after) query = query.where('id', '>', page.after)
  return query.execute()
}

export function revokeApiKey(db: DB, tenantId: string, id: string, now: Date) {
  return db
    .updateTable('api_keys')
    .set({ revoked_at: now })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .where('revoked_at', 'is', null)
    .returningAll()
    .executeTakeFirst()
}

export function findApiKey(db: DB, tenantId: string, id: string) {
  return db.selectFrom('api_keys').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst()
}
