import { createHash } from 'node:crypto'
import type { Clock } from '../../adapters/clock.js'
import type { DB } from '../../db/connect.js'
import type { JsonObject, RecordRow } from '../../db/database.js'
import { badRequest, conflict, forbidden, notFound, unprocessable } from '../../errors.js'
import { claimWithdrawn, type ApiClaim } from '../../lib/api-claims.js'
import { newId } from '../../lib/ids.js'
import { firstNonFinite, firstTooDeep, loneSurrogates, nulCharacters } from '../../lib/json-limits.js'
import { countWithinBudget, toPage, type PageRequest, type PageResult } from '../../lib/pagination.js'
import { checkVersion, type ExpectedVersions } from '../../lib/versioning.js'
import type { Activity } from '../activities/schemas.js'
import * as activities from '../activities/service.js'
import { insertActivity } from '../activities/repository.js'
import { autostartOnWrite } from '../autostart/service.js'
import { processWriter, type ChainWriter } from '../instances/chain.js'
import { holdServiceForClaim } from '../marketplace/activations/repository.js'
import { isTenantUser } from '../users/repository.js'
import { changedFields, splitMergePatch } from './fields.js'
import { checkFieldsInput, checkFieldsSize, FIELDS_MAX_DEPTH } from './limits.js'
import { RECORD_OVERHEAD_BYTES, recordPageJson } from './page-json.js'
import * as repo from './repository.js'
import { cancelTriggeredDeliveries, queueTriggeredDeliveries, type QueuedTrigger } from './trigger-repository.js'
import { readWatchers, RECORD_NAME } from './watchers.js'
import type { ApiRecord, CreateRecord, ListRecordsQuery, RecordKind, UpdateRecord } from './schemas.js'

/** A record as written, with the names of the fields the write changed, the deliveries it fired and the processes it autostarted. */
export interface RecordWrite {
  record: ApiRecord
  changedFields: string[]
  triggered: QueuedTrigger[]
  /** Autostarts the write claimed (each started a process or recorded why it skipped). */
  autostarted: number
}

/** A provider writing back with the apiClaim of one of its calls. */
export type ClaimWriter = Pick<ApiClaim, 'serviceId' | 'deliveryId' | 'activatedAt'>

function toRecord(row: RecordRow): ApiRecord {
  return {
    id: row.id,
    maintainerUserId: row.maintainer_user_id,
    fields: row.fields,
    version: row.version,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString()
  }
}

/**
 * The record write, the deliveries its changed fields fire and the processes it autostarts commit
 * together, or none does. With an Idempotency-Key, a create retried with the same request answers with
 * the record the first one made (as it is now), and fires nothing again (`created` false); the same
 * key with another request is refused.
 */
export async function createRecord(
  db: DB, clock: Clock, kind: RecordKind, tenantId: string, input: CreateRecord, idempotencyKey?: string
): Promise<RecordWrite & { created: boolean }> {
  checkFieldsInput(input.fields, 'create')
  const digest = idempotencyKey === undefined ? null : requestDigest(input)
  if (idempotencyKey !== undefined) {
    const earlier = await repo.findRecordByKey(db, kind.table, tenantId, idempotencyKey)
    if (earlier) return replayed(kind, earlier, digest)
  }
  const maintainer = input.maintainerUserId ?? null
  await checkMaintainer(db, tenantId, maintainer)
  const now = clock.now()
  const written = await db.transaction().execute(async (trx) => {
    const row = await guardMaintainer(kind, () => repo.insertRecord(trx, kind.table, {
      tenant_id: tenantId, id: newId(), maintainer_user_id: maintainer, fields: input.fields ?? {}, created_at: now,
      idempotency_key: idempotencyKey ?? null, idempotency_digest: digest
    }))
    if (!row) return undefined
    const changed = changedFields({}, row.fields)
    const change = { tenantId, table: kind.table, recordId: row.id, event: 'create' as const, changedFields: changed, now }
    const watchers = await readWatchers(trx, change)
    const triggered = await queueTriggeredDeliveries(trx, change, watchers.services)
    const autostarted = await autostartOnWrite(trx, now, { tenantId, record: RECORD_NAME[kind.table], row, event: 'create', changedFields: changed }, watchers.templates)
    return { record: toRecord(row), changedFields: changed, triggered, autostarted, created: true }
  })
  if (written) return written
  // A create with the same key committed while this one ran: answer with its record.
  const earlier = await repo.findRecordByKey(db, kind.table, tenantId, idempotencyKey ?? '')
  if (!earlier) throw conflict('The record created with this Idempotency-Key was deleted while this create ran; retry it to create another.')
  return replayed(kind, earlier, digest)
}

/**
 * What a create asked for, as a digest that depends neither on the order of keys nor on the case of
 * the maintainer's id: a retry must ask for the same.
 */
export function requestDigest(input: CreateRecord): string {
  const asked = { maintainerUserId: input.maintainerUserId?.toLowerCase() ?? null, fields: input.fields ?? {} }
  return createHash('sha256').update(canonicalJson(asked)).digest('base64url')
}

/** JSON with every object's keys in order. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (typeof value === 'object' && value !== null) {
    return `{${Object.keys(value).sort().map((key) => `${JSON.stringify(key)}:${canonicalJson((value as Record<string, unknown>)[key])}`).join(',')}}`
  }
  return JSON.stringify(value)
}

function replayed(kind: RecordKind, earlier: RecordRow, digest: string | null): RecordWrite & { created: boolean } {
  if (earlier.idempotency_digest !== digest) {
    throw unprocessable(`The Idempotency-Key was used for a different create (${kind.noun.toLowerCase()} ${earlier.id}); use a new key.`)
  }
  return { record: toRecord(earlier), changedFields: [], triggered: [], autostarted: 0, created: false }
}

export async function getRecord(db: DB, kind: RecordKind, tenantId: string, id: string): Promise<ApiRecord> {
  const row = await repo.findRecord(db, kind.table, tenantId, id)
  if (!row) throw notFound(kind.noun, id)
  return toRecord(row)
}

/** A page of records as JSON text, read as it is sent (see recordPageJson); a bad filter fails before it starts. */
export async function listRecordsJson(
  db: DB, kind: RecordKind, tenantId: string, page: PageRequest, query: Pick<ListRecordsQuery, 'maintainerUserId' | 'fields'>
): Promise<AsyncIterable<string>> {
  const filter = { maintainerUserId: query.maintainerUserId, fieldsContain: parseFieldsFilter(query.fields) }
  const sizes = await repo.listRecordSizes(db, kind.table, tenantId, page, filter)
  const fit = countWithinBudget(sizes.slice(0, page.limit).map((row) => row.fields_bytes + RECORD_OVERHEAD_BYTES))
  const { items, nextCursor } = toPage({ rows: sizes.slice(0, fit), more: sizes.length > fit }, page, (row) => row)
  return recordPageJson(db, kind.table, tenantId, filter, items, nextCursor)
}

export async function updateRecord(
  db: DB, clock: Clock, kind: RecordKind, tenantId: string, id: string, input: UpdateRecord, expected?: ExpectedVersions, by?: ClaimWriter
): Promise<RecordWrite> {
  checkFieldsInput(input.fields, 'patch')
  await checkMaintainer(db, tenantId, input.maintainerUserId)
  const now = clock.now()
  const written = await db.transaction().execute(async (trx) => {
    if (by) await repo.holdEndedProcessOfCall(trx, tenantId, by.deliveryId)
    const row = await guardMaintainer(kind, () => repo.patchRecord(trx, kind.table, tenantId, id, {
      maintainerUserId: input.maintainerUserId, fields: splitMergePatch(input.fields), expectedVersions: expected, now
    }))
    if (!row) return undefined
    const { before_fields: before, ...current } = row
    // The merged record may outgrow the limit though the patch alone does not: throwing rolls the update back.
    checkFieldsSize(current.fields)
    const changed = changedFields(before, current.fields)
    // A write-back is its call's writer's: a process's, for its webhook step, or that of the trigger's delivery (chain.ts).
    const call = by ? await repo.findDeliveryWriter(trx, tenantId, by.deliveryId) : undefined
    const writer = by && call ? writerOf(call, by.deliveryId) : undefined
    const change = { tenantId, table: kind.table, recordId: id, event: 'update' as const, changedFields: changed, byServiceId: by?.serviceId, writer, now }
    const watchers = await readWatchers(trx, change)
    const triggered = await queueTriggeredDeliveries(trx, change, watchers.services)
    if (by) await recordWriteBack(trx, kind, tenantId, id, by, call, changed, now)
    const autostarted = await autostartOnWrite(trx, now, { tenantId, record: RECORD_NAME[kind.table], row: current, event: 'update', changedFields: changed, writer }, watchers.templates)
    return { record: toRecord(current), changedFields: changed, triggered, autostarted }
  })
  return written ?? explainMissedUpdate(db, kind, tenantId, id, expected)
}

type ClaimCall = NonNullable<Awaited<ReturnType<typeof repo.findDeliveryWriter>>>

/** The writer of a write-back made with a call's apiClaim: the call's process, or its trigger's delivery (chain.ts). */
function writerOf(found: ClaimCall, deliveryId: string): ChainWriter {
  return found.instance_id !== null && found.instance_depth !== null
    ? processWriter({ id: found.instance_id, chain_depth: found.instance_depth, chain_root_id: found.instance_root })
    : { chainDepth: found.chain_depth, rootId: found.chain_root_id ?? undefined, says: `the provider of delivery ${deliveryId}`, data: { byDeliveryId: deliveryId } }
}

/**
 * A provider's write-back shows on the record's activity log, naming the service, and on its call's
 * process's, naming the step, for a step's call (`call`, undefined once retention removed the delivery).
 *
 * The claim was checked when the request came in; it is checked again here, with the activation held
 * until the commit (the service's name read with it): a deactivation answered while the write waited
 * (for the record, say) withdrew the claim (403, nothing written), and one that comes now waits for the
 * commit. Held late in the write, for as short as can be: a stream of write-backs holding it from
 * their start kept a deactivation waiting for a gap between them for seconds.
 */
async function recordWriteBack(
  db: DB, kind: RecordKind, tenantId: string, id: string, by: ClaimWriter, call: ClaimCall | undefined, changed: string[], now: Date
): Promise<void> {
  const service = await holdServiceForClaim(db, tenantId, by.serviceId)
  const withdrawn = claimWithdrawn(by, service)
  if (withdrawn) throw forbidden(withdrawn)
  const what = changed.length === 0 ? 'wrote back without changing a field' : `updated ${changed.join(', ')}`
  await insertActivity(db, {
    tenant_id: tenantId,
    id: newId(now.getTime()),
    kind: 'recordUpdatedByService',
    message: `${service!.name} ${what}.`,
    [repo.LINK_COLUMN[kind.table]]: id,
    service_id: by.serviceId,
    instance_id: call?.instance_id ?? null,
    step_id: call?.instance_id ? call.step_id : null,
    data: { changedFields: changed, deliveryId: by.deliveryId },
    created_at: now
  })
}

/**
 * Deletes the record unless a process links it; with If-Match, only at one of the expected versions
 * (412 otherwise). Its trigger deliveries no worker has claimed are cancelled in the same commit.
 */
export async function deleteRecord(
  db: DB, clock: Clock, kind: RecordKind, tenantId: string, id: string, expected?: ExpectedVersions
): Promise<void> {
  const current = await getRecord(db, kind, tenantId, id)
  checkVersion(expected, current.version, `${kind.noun} ${id}`)
  await refuseIfLinked(db, kind, tenantId, id)
  const deleted = await db.transaction().execute(async (trx) => {
    if (!(await repo.deleteRecord(trx, kind.table, tenantId, id, expected))) return false
    await cancelTriggeredDeliveries(trx, kind.table, tenantId, id, clock.now())
    return true
  }).catch(async (error: unknown) => {
    // An instance was linked between the check and the delete.
    if (repo.isForeignKeyViolation(error)) await refuseIfLinked(db, kind, tenantId, id)
    throw error
  })
  // Deleted, or written to another version, since the check: 404 or 412.
  if (!deleted) await explainMissedUpdate(db, kind, tenantId, id, expected)
}

export async function listRecordActivities(
  db: DB, kind: RecordKind, tenantId: string, id: string, page: PageRequest
): Promise<PageResult<Activity>> {
  await getRecord(db, kind, tenantId, id)
  return activities.listActivitiesOf(db, tenantId, repo.LINK_COLUMN[kind.table], id, page)
}

async function explainMissedUpdate(db: DB, kind: RecordKind, tenantId: string, id: string, expected: ExpectedVersions): Promise<never> {
  const current = await getRecord(db, kind, tenantId, id)
  checkVersion(expected, current.version, `${kind.noun} ${id}`)
  throw conflict(`${kind.noun} ${id} changed while it was being updated; retry.`)
}

async function refuseIfLinked(db: DB, kind: RecordKind, tenantId: string, id: string): Promise<void> {
  const instanceIds = await repo.findLinkingInstanceIds(db, kind.table, tenantId, id)
  if (instanceIds.length > 0) {
    // Ended processes keep their links (their history names the record) until the retention removes them.
    throw conflict(`${kind.noun} ${id} is linked to process instances: ${instanceIds.join(', ')}. A process keeps its records ` +
      'linked while it runs and once it has ended, until the retention removes it (BATON_RETENTION_DAYS after it ended; never when that is 0).')
  }
}

async function checkMaintainer(db: DB, tenantId: string, userId: string | null | undefined): Promise<void> {
  if (userId && !(await isTenantUser(db, tenantId, userId))) throw unknownMaintainer(userId)
}

// The check above can race a user's deletion; the maintainer's foreign key then answers the same 422. The
// tenant's is another matter: its deletion, through an API process that another still takes its key in (for 2 s).
async function guardMaintainer<T>(kind: RecordKind, write: () => Promise<T>): Promise<T> {
  try {
    return await write()
  } catch (error) {
    if (repo.isForeignKeyViolation(error) && (error as { constraint?: string }).constraint === `${kind.table}_tenant_id_maintainer_user_id_fkey`) {
      throw unknownMaintainer()
    }
    throw error
  }
}

function unknownMaintainer(userId?: string) {
  const detail = userId === undefined ? 'The maintainer is not a user of this tenant.' : `User ${userId} is not a user of this tenant.`
  return unprocessable(detail, [{ pointer: '/body/maintainerUserId', detail: 'no such user' }])
}

function parseFieldsFilter(text: string | undefined): JsonObject | undefined {
  if (text === undefined) return undefined
  const value = parseJson(text)
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const deep = firstTooDeep(value, FIELDS_MAX_DEPTH, '/querystring/fields')
    if (deep !== undefined) {
      throw badRequest(`The fields filter may nest at most ${FIELDS_MAX_DEPTH} levels deep.`, [{ pointer: '/querystring/fields', detail: 'nested too deep' }])
    }
    // JSON.parse reads 1e400 as Infinity, which the filter would then look for as null.
    const huge = firstNonFinite(value, '/querystring/fields')
    if (huge !== undefined) throw badRequest('The fields filter holds a number too large for this API (beyond ±1.8e308).', [{ pointer: huge, detail: 'number too large' }])
    // Half of a surrogate pair alone (\ud800) is no text Postgres compares: it refused the filter with a 400 naming no field.
    const lone = loneSurrogates(value, '/querystring/fields')
    if (lone.length > 0) throw badRequest('The fields filter holds text with half of a surrogate pair alone (a \\uD800–\\uDFFF escape without its other half).', lone)
    // An escaped NUL (\u0000) is no text Postgres compares either: it refused the filter with a 400 naming no field.
    const nul = nulCharacters(value, '/querystring/fields')
    if (nul.length > 0) throw badRequest('The fields filter holds the NUL character (an escaped \\u0000), which no record field holds.', nul)
    return value as JsonObject
  }
  throw badRequest('The fields filter must be a JSON object, e.g. {"city":"Berlin"}.', [{ pointer: '/querystring/fields', detail: 'not a JSON object' }])
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}
