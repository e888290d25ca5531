import type { Clock } from '../../adapters/clock.js'
import type { DB } from '../../db/connect.js'
import type { UserRow } from '../../db/database.js'
import { conflict, notFound } from '../../errors.js'
import { refuseBlankNames } from '../../lib/blank-names.js'
import { changesNothing } from '../../lib/changes.js'
import { newId } from '../../lib/ids.js'
import { toPage, type PageRequest } from '../../lib/pagination.js'
import { isForeignKeyViolation } from '../records/repository.js'
import * as repo from './repository.js'
import type { CreateUser, ListUsersQuery, UpdateUser, User } from './schemas.js'

function toUser(row: UserRow): User {
  return { id: row.id, name: row.name, email: row.email, createdAt: row.created_at.toISOString(), updatedAt: row.updated_at.toISOString() }
}

async function checkEmailFree(db: DB, tenantId: string, email: string | undefined, userId?: string): Promise<void> {
  if (email === undefined) return
  const owner = await repo.findEmailOwner(db, tenantId, email)
  if (owner && owner.id !== userId) throw conflict(`User ${owner.id} already has the e-mail address ${email}.`)
}

export async function createUser(db: DB, tenantId: string, input: CreateUser): Promise<User> {
  refuseBlankNames(input, ['name'])
  await checkEmailFree(db, tenantId, input.email)
  return toUser(await repo.insertUser(db, { tenant_id: tenantId, id: newId(), name: input.name, email: input.email }))
}

export async function getUser(db: DB, tenantId: string, id: string): Promise<User> {
  const row = await repo.findUserById(db, tenantId, id)
  if (!row) throw notFound('User', id)
  return toUser(row)
}

export async function listUsers(db: DB, tenantId: string, page: PageRequest, filter: Pick<ListUsersQuery, 'email' | 'q'>) {
  return toPage(await repo.listUsers(db, tenantId, page, filter), page, toUser)
}

export async function updateUser(db: DB, clock: Clock, tenantId: string, id: string, input: UpdateUser): Promise<User> {
  refuseBlankNames(input, ['name'])
  await checkEmailFree(db, tenantId, input.email, id)
  return db.transaction().execute(async (trx) => {
    const current = await repo.lockUserForChange(trx, tenantId, id)
    if (!current) throw notFound('User', id)
    if (changesNothing(current, input)) return toUser(current)
    const row = await repo.updateUser(trx, tenantId, id, { ...input, updated_at: clock.now() })
    if (!row) throw notFound('User', id)
    return toUser(row)
  })
}

/**
 * Deletes a user nothing refers to. The user is locked first: a template write that names the user
 * in its autostart (no foreign key) holds the user until it commits, so the look-up of uses below
 * sees it, or the write finds the user gone.
 */
export async function deleteUser(db: DB, tenantId: string, id: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    if (!(await repo.lockUser(trx, tenantId, id))) throw notFound('User', id)
    const usages = describeUsages(await repo.findUserUsages(trx, tenantId, id))
    if (usages.length > 0) throw conflict(`User ${id} is still in use: ${usages.join('; ')}.`)
    await deleteUnused(trx, tenantId, id)
  })
}

async function deleteUnused(db: DB, tenantId: string, id: string): Promise<void> {
  let deleted: boolean
  try {
    deleted = await repo.deleteUser(db, tenantId, id)
  } catch (error) {
    // A step a process started keeps its assignee (its history says who was assigned), which no
    // look-up above covers: the foreign key says so, as it does for a use that came up meanwhile.
    if (!isForeignKeyViolation(error)) throw error
    const table = (error as { table?: string }).table
    throw conflict(`User ${id} is still in use: ${table === 'instance_steps'
      ? 'assigned steps of process instances, whose history keeps who was assigned' : `by ${table ?? 'another row'}`}.`)
  }
  if (!deleted) throw notFound('User', id)
}

function describeUsages(u: Awaited<ReturnType<typeof repo.findUserUsages>>): string[] {
  return [
    ...u.templates.map((t) => `controller of template "${t.name}" (${t.id})`),
    ...u.autostarts.map((t) => `responsible for the processes template "${t.name}" (${t.id}) starts itself`),
    ...u.steps.map((s) => `responsible for step "${s.name}" (${s.id}) of template "${s.templateName}"`),
    ...u.properties.map((p) => `maintainer of property ${p.id}`),
    ...u.addresses.map((a) => `maintainer of address ${a.id}`),
    ...u.instances.map((i) => `responsible for or controlling process instance ${i.id}`)
  ]
}
