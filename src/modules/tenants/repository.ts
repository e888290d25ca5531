import type { DB } from '../../db/connect.js'
import type { NewTenantRow, TenantUpdate } from '../../db/database.js'
import type { PageRequest } from '../../lib/pagination.js'

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

export function updateTenant(db: DB, id: string, changes: TenantUpdate) {
  return db.updateTable('tenants').set(changes).where('id', '=', id).returningAll().executeTakeFirst()
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
 */
export async function deleteTenant(db: DB, id: string): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
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
