import type { Clock } from '../../adapters/clock.js'
import type { DB } from '../../db/connect.js'
import type { TenantRow } from '../../db/database.js'
import { conflict, notFound, unprocessable } from '../../errors.js'
import { refuseBlankNames } from '../../lib/blank-names.js'
import { changesNothing } from '../../lib/changes.js'
import { newId } from '../../lib/ids.js'
import { generateKey, hashKey, keyPrefix } from '../../lib/keys.js'
import { toPage, type PageRequest } from '../../lib/pagination.js'
import * as repo from './repository.js'
import type { ApiKey, CreateTenant, NewApiKey, Tenant, UpdateTenant } from './schemas.js'

function toTenant(row: TenantRow): Tenant {
  return {
    id: row.id,
    name: row.name,
    webId: row.web_id,
    timeZone: row.time_zone,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
    deletingSince: row.deleting_since?.toISOString() ?? null
  }
}

/**
 * An IANA zone's name: words of letters, digits, _, + and - joined by /, the first starting with a
 * letter (Europe/Berlin, Etc/GMT+1, EST5EDT). Newer Node versions also take a UTC offset (+01:00) as
 * a time zone, which the zone database does not hold and Node 20 refuses: refused on every version.
 */
const ZONE_NAME = /^[A-Za-z][A-Za-z0-9_+-]*(?:\/[A-Za-z0-9_+-]+)*$/

/**
 * Ids ICU takes that the zone database does not hold: Java's old three-letter ids, several another
 * zone than the abbreviation reads (BST is Asia/Dhaka, not London's summer time; AST Anchorage, not
 * the Atlantic; ART Cairo, ECT Paris, NST Auckland), and SystemV/, which the database dropped in 2020.
 * The database's own short names (CET, EST, GMT, UTC…) are zones.
 */
const ICU_ONLY = /^(?:ACT|AET|AGT|ART|AST|BET|BST|CAT|CNT|CST|CTT|EAT|ECT|IET|IST|JST|MIT|NET|NST|PLT|PNT|PRT|PST|SST|VST|SystemV\/.*)$/i

/**
 * The zone's name in the case the zone database spells it (europe/berlin is Europe/Berlin), or
 * undefined for no zone. Only the case changes: a link keeps the name given (Asia/Kolkata stays
 * Asia/Kolkata, though Node 20's ICU calls its zone Asia/Calcutta), so what reads back does not hang
 * on the runtime's ICU. A link given in another case than its own is kept as given.
 */
function canonicalTimeZone(zone: string): string | undefined {
  if (!ZONE_NAME.test(zone) || ICU_ONLY.test(zone)) return undefined
  let named: string
  try {
    named = new Intl.DateTimeFormat('en', { timeZone: zone }).resolvedOptions().timeZone
  } catch {
    return undefined
  }
  return named.toLowerCase() === zone.toLowerCase() ? named : zone
}

/** The zone to store for the one a request gave; 422 when it is none. */
function checkedTimeZone(zone: string | undefined): string | undefined {
  if (zone === undefined) return undefined
  const canonical = canonicalTimeZone(zone)
  if (canonical === undefined) {
    throw unprocessable(`"${zone}" is not an IANA time zone.`, [{ pointer: '/body/timeZone', detail: 'unknown time zone, e.g. Europe/Berlin' }])
  }
  return canonical
}

async function checkWebIdFree(db: DB, webId: string | undefined, tenantId?: string): Promise<void> {
  if (webId === undefined) return
  const owner = await repo.findWebIdOwner(db, webId)
  if (owner && owner.id !== tenantId) throw conflict(`Another tenant already has webId "${webId}".`)
}

export async function createTenant(db: DB, input: CreateTenant): Promise<Tenant> {
  refuseBlankNames(input, ['name'])
  const timeZone = checkedTimeZone(input.timeZone)
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
  refuseBlankNames(input, ['name'])
  const timeZone = checkedTimeZone(input.timeZone)
  await checkWebIdFree(db, input.webId, id)
  return db.transaction().execute(async (trx) => {
    const current = await repo.lockTenantForChange(trx, id)
    if (!current) throw notFound('Tenant', id)
    const changes = { name: input.name, web_id: input.webId, time_zone: timeZone }
    if (changesNothing(current, changes)) return toTenant(current)
    const row = await repo.updateTenant(trx, id, { ...changes, updated_at: clock.now() })
    if (!row) throw notFound('Tenant', id)
    return toTenant(row)
  })
}

/** The deletion's first step: the tenant is marked as being deleted (repo.markDeleting); 404 when there is no such tenant. */
export async function markTenantDeleting(db: DB, clock: Clock, id: string): Promise<void> {
  if (!(await repo.markDeleting(db, id, clock.now()))) throw notFound('Tenant', id)
}

/** Deletes a tenant marked as being deleted; 404 when another deletion took it meanwhile. */
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
  refuseBlankNames({ name }, ['name'])
  const key = generateKey('tenant')
  // The tenant is held from the check to the insert's commit: a deletion that begins meanwhile waits
  // to mark it until the key is made (and then refuses it as the tenant's other keys), and one that
  // marked it first is seen here. Checked before the insert unheld, such a key was made (201) for a
  // tenant marked in between, a key refused from the start.
  const row = await db.transaction().execute(async (trx) => {
    const tenant = await repo.lockTenantForKey(trx, tenantId)
    if (!tenant) throw notFound('Tenant', tenantId)
    // Its keys are refused (401) until it is gone: the operator learns why now rather than from each request.
    if (tenant.deleting_since !== null) {
      throw conflict(`Tenant ${tenantId} is being deleted (since ${tenant.deleting_since.toISOString()}) and gets no new API key; deleting it again finishes the deletion.`)
    }
    return repo.insertApiKey(trx, { tenant_id: tenantId, id: newId(), name, key_prefix: keyPrefix(key), key_hash: hashKey(key) })
  })
  return { ...toApiKey(row), key }
}

export async function listApiKeys(db: DB, tenantId: string, page: PageRequest) {
  await getTenant(db, tenantId)
  return toPage(await repo.listApiKeys(db, tenantId, page), page, toApiKey)
}

/** One key of the tenant, without its secret: where a new key's Location points. */
export async function getApiKey(db: DB, tenantId: string, id: string): Promise<ApiKey> {
  const row = await repo.findApiKey(db, tenantId, id)
  if (!row) throw notFound('API key', id)
  return toApiKey(row)
}

export async function revokeApiKey(db: DB, clock: Clock, tenantId: string, id: string): Promise<void> {
  const revoked = await repo.revokeApiKey(db, tenantId, id, clock.now())
  if (!revoked && !(await repo.findApiKey(db, tenantId, id))) throw notFound('API key', id)
}
