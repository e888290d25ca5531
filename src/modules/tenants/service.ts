import type { Clock } from '../../adapters/clock.js'
import type { DB } from '../../db/connect.js'
import { sql } from '../../db/kysely.js'
import type { TenantRow } from '../../db/database.js'
import { conflict, notFound, unprocessable } from '../../errors.js'
import { newId } from '../../lib/ids.js'
import { generateKey, hashKey, keyPrefix } from '../../lib/keys.js'
import { toPage, type PageRequest } from '../../lib/pagination.js'
import * as repo from './repository.js'
import type { ApiKey, CreateTenant, NewApiKey, Tenant, UpdateTenant } from './schemas.js'

export function toTenant(row: TenantRow): Tenant {
  return {
    id: row.id,
    name: row.name,
    webId: row.web_id,
    timeZone: row.time_zone,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString()
  }
}

export function isTimeZone(zone: string): boolean {
  return canonicalOf(zone) !== undefined
}

/** The IANA zone Intl takes a name for (an alias or an old name gives the zone it links to); undefined for none. */
function canonicalOf(zone: string): string | undefined {
  try {
    return new Intl.DateTimeFormat('en', { timeZone: zone }).resolvedOptions().timeZone
  } catch {
    return undefined
  }
}

/**
 * The time zone a tenant keeps: the IANA zone the name given stands for (`US/Pacific` is kept as
 * `America/Los_Angeles`, `CET` as `Europe/Brussels`), which the database must know too: its date
 * chores read a tenant's local date in SQL, where a name like `AET` was not recognized (a 500, and
 * the date autostarts of every tenant stopped) and one like `CET` was read as a fixed offset.
 */
async function timeZoneOf(db: DB, zone: string | undefined): Promise<string | undefined> {
  if (zone === undefined) return undefined
  const canonical = canonicalOf(zone)
  const refuse = (why: string) => unprocessable(`"${zone}" is not ${why}.`, [{ pointer: '/body/timeZone', detail: 'unknown time zone, e.g. Europe/Berlin' }])
  if (canonical === undefined) throw refuse('an IANA time zone')
  try {
    await sql`select now() at time zone ${canonical}`.execute(db)
  } catch (error) {
    if ((error as { code?: string }).code === '22023') throw refuse(`a time zone the database knows (as ${canonical})`)
    throw error
  }
  return canonical
}

async function checkWebIdFree(db: DB, webId: string | undefined, tenantId?: string): Promise<void> {
  if (webId === undefined) return
  const owner = await repo.findWebIdOwner(db, webId)
  if (owner && owner.id !== tenantId) throw conflict(`Another tenant already has webId "${webId}".`)
}

export async function createTenant(db: DB, input: CreateTenant): Promise<Tenant> {
  const timeZone = await timeZoneOf(db, input.timeZone)
  await checkWebIdFree(db, input.webId)
  const row = await repo.insertTenant(db, {
    id: newId(),
    name: input.name,
    web_id: input.webId,
    ...(timeZone === undefined ? {} : { time_zone: timeZone })
  })
  return toTenant(row)
}

export async function getTenant(db: DB, id: string): Promise<Tenant> {
  const row = await repo.findTenantById(db, id)
  if (!row) throw notFound('Tenant', id)
  return toTenant(row)
}

export async function listTenants(db: DB, page: PageRequest) {
  return toPage(await repo.listTenants(db, page), page, toTenant)
}

export async function updateTenant(db: DB, clock: Clock, id: string, input: UpdateTenant): Promise<Tenant> {
  const timeZone = await timeZoneOf(db, input.timeZone)
  await checkWebIdFree(db, input.webId, id)
  const row = await repo.updateTenant(db, id, {
    ...(input.name === undefined ? {} : { name: input.name }),
    ...(input.webId === undefined ? {} : { web_id: input.webId }),
    ...(timeZone === undefined ? {} : { time_zone: timeZone }),
    updated_at: clock.now()
  })
  if (!row) throw notFound('Tenant', id)
  return toTenant(row)
}

export async function deleteTenant(db: DB, id: string): Promise<void> {
  if (!(await repo.deleteTenant(db, id))) throw notFound('Tenant', id)
}

function toApiKey(row: Awaited<ReturnType<typeof repo.insertApiKey>>): ApiKey {
  return {
    id: row.id,
    tenantId: row.tenant_id,
    name: row.name,
    prefix: row.key_prefix,
    createdAt: row.created_at.toISOString(),
    revokedAt: row.revoked_at?.toISOString() ?? null
  }
}

export async function createApiKey(db: DB, tenantId: string, name: string): Promise<NewApiKey> {
  await getTenant(db, tenantId)
  const key = generateKey('tenant')
  const row = await repo.insertApiKey(db, { tenant_id: tenantId, id: newId(), name, key_prefix: keyPrefix(key), key_hash: hashKey(key) })
  return { ...toApiKey(row), key }
}

export async function listApiKeys(db: DB, tenantId: string, page: PageRequest) {
  await getTenant(db, tenantId)
  return toPage(await repo.listApiKeys(db, tenantId, page), page, toApiKey)
}

export async function revokeApiKey(db: DB, clock: Clock, tenantId: string, id: string): Promise<void> {
  const revoked = await repo.revokeApiKey(db, tenantId, id, clock.now())
  if (!revoked && !(await repo.findApiKey(db, tenantId, id))) throw notFound('API key', id)
}
