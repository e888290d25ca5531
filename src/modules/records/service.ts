import type { Clock } from '../../adapters/clock.js'
import type { DB } from '../../db/connect.js'
import type { JsonObject, RecordRow } from '../../db/database.js'
import { badRequest, conflict, notFound, unprocessable } from '../../errors.js'
import { newId } from '../../lib/ids.js'
import { toPage, type PageRequest, type PageResult } from '../../lib/pagination.js'
import { checkVersion } from '../../lib/versioning.js'
import type { Activity } from '../activities/schemas.js'
import * as activities from '../activities/service.js'
import { changedFields, splitMergePatch } from './fields.js'
import * as repo from './repository.js'
import type { ApiRecord, CreateRecord, ListRecordsQuery, RecordKind, UpdateRecord } from './schemas.js'

/** A record as written, with the names of the fields the write changed. */
export interface RecordWrite {
  record: ApiRecord
  changedFields: string[]
}

export function toRecord(row: RecordRow): ApiRecord {
  return {
    id: row.id,
    maintainerUserId: row.maintainer_user_id,
    fields: row.fields,
    version: row.version,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString()
  }
}

/** Where field changes leave this module: the marketplace triggers hook in here. */
export function fieldsWritten(before: JsonObject, after: JsonObject): string[] {
  return changedFields(before, after)
}

export async function createRecord(db: DB, clock: Clock, kind: RecordKind, tenantId: string, input: CreateRecord): Promise<RecordWrite> {
  const maintainer = input.maintainerUserId ?? null
  await checkMaintainer(db, tenantId, maintainer)
  const row = await guardMaintainer(() => repo.insertRecord(db, kind.table, {
    tenant_id: tenantId, id: newId(), maintainer_user_id: maintainer, fields: input.fields ?? {}, created_at: clock.now()
  }))
  return { record: toRecord(row), changedFields: fieldsWritten({}, row.fields) }
}

export async function getRecord(db: DB, kind: RecordKind, tenantId: string, id: string): Promise<ApiRecord> {
  const row = await repo.findRecord(db, kind.table, tenantId, id)
  if (!row) throw notFound(kind.noun, id)
  return toRecord(row)
}

export async function listRecords(
  db: DB, kind: RecordKind, tenantId: string, page: PageRequest, query: Pick<ListRecordsQuery, 'maintainerUserId' | 'fields'>
): Promise<PageResult<ApiRecord>> {
  const filter = { maintainerUserId: query.maintainerUserId, fieldsContain: parseFieldsFilter(query.fields) }
  return toPage(await repo.listRecords(db, kind.table, tenantId, page, filter), page, toRecord)
}

export async function updateRecord(
  db: DB, clock: Clock, kind: RecordKind, tenantId: string, id: string, input: UpdateRecord, expectedVersion?: number
): Promise<RecordWrite> {
  await checkMaintainer(db, tenantId, input.maintainerUserId)
  const row = await guardMaintainer(() => repo.patchRecord(db, kind.table, tenantId, id, {
    maintainerUserId: input.maintainerUserId, fields: splitMergePatch(input.fields), expectedVersion, now: clock.now()
  }))
  if (!row) return explainMissedUpdate(db, kind, tenantId, id, expectedVersion)
  const { before_fields: before, ...current } = row
  return { record: toRecord(current), changedFields: fieldsWritten(before, current.fields) }
}

export async function deleteRecord(db: DB, kind: RecordKind, tenantId: string, id: string): Promise<void> {
  await getRecord(db, kind, tenantId, id)
  await refuseIfLinked(db, kind, tenantId, id)
  const deleted = await repo.deleteRecord(db, kind.table, tenantId, id).catch(async (error: unknown) => {
    // An instance was linked between the check and the delete.
    if (repo.isForeignKeyViolation(error)) await refuseIfLinked(db, kind, tenantId, id)
    throw error
  })
  if (!deleted) throw notFound(kind.noun, id)
}

export async function listRecordActivities(
  db: DB, kind: RecordKind, tenantId: string, id: string, page: PageRequest
): Promise<PageResult<Activity>> {
  await getRecord(db, kind, tenantId, id)
  return activities.listActivitiesOf(db, tenantId, repo.LINK_COLUMN[kind.table], id, page)
}

async function explainMissedUpdate(db: DB, kind: RecordKind, tenantId: string, id: string, expected?: number): Promise<never> {
  const current = await getRecord(db, kind, tenantId, id)
  checkVersion(expected, current.version, `${kind.noun} ${id}`)
  throw conflict(`${kind.noun} ${id} changed while it was being updated; retry.`)
}

async function refuseIfLinked(db: DB, kind: RecordKind, tenantId: string, id: string): Promise<void> {
  const instanceIds = await repo.findLinkingInstanceIds(db, kind.table, tenantId, id)
  if (instanceIds.length > 0) {
    throw conflict(`${kind.noun} ${id} is linked to process instances: ${instanceIds.join(', ')}. Cancel or finish them first.`)
  }
}

async function checkMaintainer(db: DB, tenantId: string, userId: string | null | undefined): Promise<void> {
  if (userId && !(await repo.userExists(db, tenantId, userId))) throw unknownMaintainer(userId)
}

// The check above can race a user's deletion; the foreign key then answers the same 422.
async function guardMaintainer<T>(write: () => Promise<T>): Promise<T> {
  try {
    return await write()
  } catch (error) {
    if (repo.isForeignKeyViolation(error)) throw unknownMaintainer()
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
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as JsonObject
  throw badRequest('The fields filter must be a JSON object, e.g. {"city":"Berlin"}.', [{ pointer: '/querystring/fields', detail: 'not a JSON object' }])
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}
