import { randomBytes } from 'node:crypto'
import type { TargetPolicy } from '../../../adapters/address-policy.js'
import type { Clock } from '../../../adapters/clock.js'
import type { DB } from '../../../db/connect.js'
import type { ServiceRow } from '../../../db/database.js'
import { conflict, notFound, unprocessable } from '../../../errors.js'
import { newId } from '../../../lib/ids.js'
import { toPage, type PageRequest } from '../../../lib/pagination.js'
import { secretContext, SecretsKeyError, type SecretBox } from '../../../lib/secret-box.js'
import { changesNothing } from '../../../lib/changes.js'
import { refuseBlankNames } from '../../../lib/blank-names.js'
import { checkVersion, type ExpectedVersions } from '../../../lib/versioning.js'
import * as repo from './repository.js'
import { checkQueryKeys, checkWebhookUrl } from './webhook-url.js'
import { secretProblem } from './secret-strength.js'
import type { CreateService, ListServicesQuery, MarketplaceService, MarketplaceServiceWithSecret, UpdateService } from './schemas.js'

/** How long a replaced secret still verifies, so providers can switch without missing calls. */
const SECRET_ROTATION_OVERLAP_MS = 24 * 60 * 60 * 1000

function toService(row: ServiceRow, activated?: boolean): MarketplaceService {
  return {
    id: row.id,
    name: row.name,
    provider: row.provider,
    webhookUrl: row.webhook_url,
    delivery: row.delivery,
    active: row.active,
    version: row.version,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
    ...(activated === undefined ? {} : { activated })
  }
}

/** A secret the operator gives must not be forgeable; Baton's own are 32 random bytes. */
function checkSecret(secret: string | undefined): void {
  const problem = secret === undefined ? undefined : secretProblem(secret)
  if (problem) throw unprocessable(`The signing secret cannot be used: it ${problem}.`, [{ pointer: '/body/secret', detail: problem }])
}

/** In the Standard Webhooks form, so json providers can hand it to their library as it is. */
function generateSecret(): string {
  return `whsec_${randomBytes(32).toString('base64')}`
}

/** What writing to the catalogue needs beside the database. */
export interface CatalogueWrites {
  db: DB
  clock: Clock
  secrets: SecretBox
  targets: TargetPolicy
}

export async function createService({ db, clock, secrets, targets }: CatalogueWrites, input: CreateService): Promise<MarketplaceServiceWithSecret> {
  refuseBlankNames(input, ['name', 'provider'])
  checkWebhookUrl(input.webhookUrl, targets)
  if ((input.delivery ?? 'query') === 'query') checkQueryKeys(input.webhookUrl, '/body/webhookUrl')
  checkSecret(input.secret)
  const now = clock.now()
  const id = newId()
  const secret = input.secret ?? generateSecret()
  const row = await repo.insertService(db, {
    id,
    name: input.name,
    provider: input.provider,
    webhook_url: input.webhookUrl,
    delivery: input.delivery ?? 'query',
    secret: secrets.seal(secret, secretContext.service(id)),
    active: input.active ?? true,
    created_at: now,
    updated_at: now
  })
  return { ...toService(row), secret }
}

/** The service as the caller may see it: the operator sees every one, a tenant active or activated ones. */
export async function findVisibleService(db: DB, tenantId: string | undefined, id: string) {
  const row = tenantId === undefined ? await repo.findServiceById(db, id) : await repo.findServiceSeenBy(db, tenantId, id)
  if (!row) throw notFound('Marketplace service', id)
  return { row, activated: 'activated' in row ? Boolean(row.activated) : undefined }
}

export async function getService(db: DB, tenantId: string | undefined, id: string): Promise<MarketplaceService> {
  const { row, activated } = await findVisibleService(db, tenantId, id)
  return toService(row, activated)
}

export async function listServices(db: DB, tenantId: string | undefined, page: PageRequest, filter: Omit<ListServicesQuery, 'limit' | 'cursor'>) {
  if (tenantId !== undefined) {
    return toPage(await repo.listServicesSeenBy(db, tenantId, page, filter), page, (row) => toService(row, Boolean(row.activated)))
  }
  if (filter.activated !== undefined) {
    throw unprocessable('The activated filter is for tenant callers.', [{ pointer: '/querystring/activated', detail: 'tenant callers only' }])
  }
  return toPage(await repo.listServices(db, page, filter), page, (row) => toService(row))
}

/**
 * Updates the service with its row locked, so an update racing another sees what that one wrote:
 * without If-Match both apply, with the same If-Match the second answers 412; and a secret
 * rotating keeps the secret it replaces as `previous_secret`, whichever update wrote it.
 */
export async function updateService(
  { db, clock, secrets, targets }: CatalogueWrites, id: string, input: UpdateService, expected: ExpectedVersions
): Promise<MarketplaceService> {
  refuseBlankNames(input, ['name', 'provider'])
  checkWebhookUrl(input.webhookUrl, targets)
  checkSecret(input.secret)
  return db.transaction().execute(async (trx) => {
    const current = await repo.lockService(trx, id)
    if (!current) throw notFound('Marketplace service', id)
    checkVersion(expected, current.version, `Marketplace service ${id}`)
    checkNewQueryUrl(current, input)
    const now = clock.now()
    // The secret opens to compare (it must, to sign): the same secret again neither rotates nor changes the service.
    const rotates = input.secret !== undefined && input.secret !== openCurrentSecret(secrets, current)
    const changes = {
      name: input.name, provider: input.provider, webhook_url: input.webhookUrl, delivery: input.delivery, active: input.active
    }
    if (!rotates && changesNothing(current, changes)) return toService(current)
    const row = await repo.updateService(trx, id, {
      ...changes,
      ...(rotates && input.secret !== undefined ? {
        secret: secrets.seal(input.secret, secretContext.service(current.id)),
        previous_secret: current.secret,
        previous_secret_expires_at: new Date(now.getTime() + SECRET_ROTATION_OVERLAP_MS)
      } : {}),
      updated_at: now
    })
    return toService(row)
  })
}

/**
 * The service's secret, to compare a new one with. One sealed with a key this process was not given
 * answers 409 rather than rotate: the replaced secret, kept to sign for 24 hours, would not open, and
 * a process with the wrong key would seal the new one with it, where the workers may not open it.
 */
function openCurrentSecret(secrets: SecretBox, current: ServiceRow): string {
  try {
    return secrets.open(current.secret, secretContext.service(current.id))
  } catch (error) {
    if (!(error instanceof SecretsKeyError)) throw error
    throw conflict(`The signing secret of marketplace service ${current.id} is sealed with a key this process was not given `
      + '(neither BATON_SECRETS_KEY nor BATON_SECRETS_KEY_PREVIOUS opens it), so it cannot be replaced here: give the process '
      + 'the key it was sealed with, as BATON_SECRETS_KEY_PREVIOUS, and try again. Changes without a secret need no key.')
  }
}

/** A query service's URL is checked for PHP when it is set or the delivery turns to query: a URL stored before keeps working. */
function checkNewQueryUrl(current: ServiceRow, input: UpdateService): void {
  if ((input.delivery ?? current.delivery) !== 'query') return
  if (input.webhookUrl !== undefined) checkQueryKeys(input.webhookUrl, '/body/webhookUrl')
  else if (current.delivery !== 'query') checkQueryKeys(current.webhook_url, '/body/delivery')
}

/**
 * Deletes a service no template uses and no process has used; `expected`: the versions If-Match names (412 otherwise, as its update).
 * The service is locked first, as for a delete: a change, or a step that comes to use it (its foreign key's share lock), waits for
 * the checks and the delete or is seen by them.
 */
export async function deleteService(db: DB, id: string, expected: ExpectedVersions = undefined): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const current = await repo.lockServiceToDelete(trx, id)
    if (!current) throw notFound('Marketplace service', id)
    checkVersion(expected, current.version, `Marketplace service ${id}`)
    const templates = await repo.findTemplatesUsing(trx, { serviceId: id })
    if (templates.length > 0) throw conflict(`Marketplace service ${id} is used by steps of ${nameTemplates(templates)}.`)
    if (await repo.hasServiceHistory(trx, id)) {
      throw conflict(`Marketplace service ${id} has process steps or deliveries on record; deactivate it instead (active: false).`)
    }
    await repo.deleteService(trx, id)
  })
}

/** Templates named for a 409, e.g. `template "Valuation" (0190…)`. */
export function nameTemplates(templates: { id: string; name: string }[]): string {
  const names = templates.map((t) => `"${t.name}" (${t.id})`).join(', ')
  return `${templates.length === 1 ? 'template' : 'templates'} ${names}`
}
