import { sql } from '../../db/kysely.js'
import type { DB } from '../../db/connect.js'
import { escapeLike } from '../../db/escape-like.js'
import type { PageRequest } from '../../lib/pagination.js'

export function findUserById(db: DB, tenantId: string, id: string) {
  return db.selectFrom('users').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst()
}

export async function isTenantUser(db: DB, tenantId: string, userId: string): Promise<boolean> {
  const row = await db.selectFrom('users').select('id').where('tenant_id', '=', tenantId).where('id', '=', userId).executeTakeFirst()
  return row !== undefined
}

/**
 * Whether the user exists, keeping it (FOR KEY SHARE) until the transaction ends, for a write that
 * names the user: a deletion, which locks the user before it looks for uses, waits for the write and
 * then sees it. Where a foreign key names the user too (a template's controller, a step's user), the
 * lock is the one its check takes, only sooner: a user a deletion holds is waited for and then read
 * as gone (the 422 of a write after the deletion), where the check failed the write with a bare 409.
 */
export async function holdTenantUser(trx: DB, tenantId: string, userId: string): Promise<boolean> {
  const row = await trx.selectFrom('users').select('id').where('tenant_id', '=', tenantId).where('id', '=', userId)
    .forKeyShare().executeTakeFirst()
  return row !== undefined
}

/** The user, locked until the transaction ends (a deletion: the writes that name it wait, then find it gone). */
export function lockUser(trx: DB, tenantId: string, id: string) {
  return trx.selectFrom('users').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).forUpdate().executeTakeFirst()
}

/** The user row, locked as an update of its columns locks it: writes that hold the user (FOR KEY SHARE) do not wait. */
export function lockUserForChange(trx: DB, tenantId: string, id: string) {
  return trx.selectFrom('users').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).forNoKeyUpdate().executeTakeFirst()
}

/**
 * An address lowered as JavaScript lowers it (the addresses are ASCII): `lower` under the database's own
 * collation lowered Turkish's I to a dotless ı. The unique index on it is the same expression (migration 0041).
 */
const LOWERED_EMAIL = sql`lower(email collate "C")`

export function listUsers(db: DB, tenantId: string, page: PageRequest, filter: { email?: string | undefined; q?: string | undefined }) {
  let query = db.selectFrom('users').selectAll().where('tenant_id', '=', tenantId).orderBy('id').limit(page.limit + 1)
  if (page.after) query = query.where('id', '>', page.after)
  if (filter.email !== undefined) query = query.where(LOWERED_EMAIL, '=', filter.email.toLowerCase())
  if (filter.q) query = query.where('name', 'ilike', `%${escapeLike(filter.q)}%`)
  return query.execute()
}

export function insertUser(db: DB, row: { tenant_id: string; id: string; name: string; email: string }) {
  return db.insertInto('users').values(row).returningAll().executeTakeFirstOrThrow()
}

export function updateUser(db: DB, tenantId: string, id: string, changes: { name?: string; email?: string; updated_at: Date }) {
  return db.updateTable('users').set(changes).where('tenant_id', '=', tenantId).where('id', '=', id).returningAll().executeTakeFirst()
}

export async function deleteUser(db: DB, tenantId: string, id: string): Promise<boolean> {
  const result = await db.deleteFrom('users').where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst()
  return result.numDeletedRows > 0n
}

export function findEmailOwner(db: DB, tenantId: string, email: string) {
  return db
    .selectFrom('users')
    .select('id')
    .where('tenant_id', '=', tenantId)
    .where(LOWERED_EMAIL, '=', email.toLowerCase())
    .executeTakeFirst()
}

/** Everything that still points at a user, a few of each kind, to name in a 409. */
export async function findUserUsages(db: DB, tenantId: string, userId: string) {
  const [templates, autostarts, steps, properties, addresses, instances] = await Promise.all([
    db.selectFrom('process_templates').select(['id', 'name']).where('tenant_id', '=', tenantId)
      .where('controller_user_id', '=', userId).limit(5).execute(),
    // an autostart's responsible user is named in its settings, where no foreign key sees it
    db.selectFrom('process_templates').select(['id', 'name']).where('tenant_id', '=', tenantId)
      .where(sql<string>`autostart #>> '{responsible,user}'`, '=', userId).limit(5).execute(),
    db.selectFrom('template_steps').innerJoin('process_templates', (j) =>
      j.onRef('process_templates.tenant_id', '=', 'template_steps.tenant_id').onRef('process_templates.id', '=', 'template_steps.template_id'))
      .select(['template_steps.id', 'template_steps.name', 'process_templates.name as templateName'])
      .where('template_steps.tenant_id', '=', tenantId).where('template_steps.responsible_user_id', '=', userId).limit(5).execute(),
    db.selectFrom('properties').select('id').where('tenant_id', '=', tenantId).where('maintainer_user_id', '=', userId).limit(5).execute(),
    db.selectFrom('addresses').select('id').where('tenant_id', '=', tenantId).where('maintainer_user_id', '=', userId).limit(5).execute(),
    instancesNamingUser(tenantId, userId).execute(db).then((result) => result.rows)
  ])
  return { templates, autostarts, steps, properties, addresses, instances }
}

/**
 * A few of the processes a user is responsible for or controls, or whose step still to start names
 * the user (its copy of the template, which may have changed since). Each kind is looked up through
 * its index by user and stops at five: as one condition with `or`, the look-up walked all of the
 * tenant's processes and steps (test/db/foreign-key-plans.test.ts).
 */
export function instancesNamingUser(tenantId: string, userId: string) {
  return sql<{ id: string }>`
    (select id from process_instances where responsible_user_id = ${userId} and tenant_id = ${tenantId} limit 5)
    union (select id from process_instances where controller_user_id = ${userId} and tenant_id = ${tenantId} limit 5)
    union (select instance_id from instance_steps
      where responsible_user_id = ${userId} and tenant_id = ${tenantId} and state in ('pending', 'waiting') limit 5)
    limit 5`
}
