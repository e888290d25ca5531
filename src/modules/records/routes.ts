import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../module-options.js'
import { markCreated } from '../../lib/location.js'
import { pageRequest, sendJsonStream } from '../../lib/pagination.js'
import { expectedVersions, setETag } from '../../lib/versioning.js'
import { forbidden } from '../../errors.js'
import { claimOf, tenantOf, type ClaimScope } from '../../plugins/auth.js'
import { IdParamsSchema, IfMatchHeadersSchema, noContent, ok, Page, PageQuerySchema, problems } from '../../schemas/common.js'
import { CreateRecordHeadersSchema, CreateRecordSchema, ListRecordsQuerySchema, recordSchema, UpdateRecordSchema, type RecordKind } from './schemas.js'
import * as records from './service.js'

/** The routes of one record module; properties and addresses differ only in their kind. */
export function recordRoutes(kind: RecordKind) {
  return async function routes(app: FastifyInstance, options: ModuleOptions): Promise<void> {
    app.addSchema(recordSchema(kind.noun))
    readRoutes(app, kind, options)
    writeRoutes(app, kind, options)
  }
}

const CLAIM_SCOPE: Record<RecordKind['table'], ClaimScope> = { properties: 'property', addresses: 'address' }

/** "a property", "an address": for summaries. */
function oneOf(kind: RecordKind): string {
  return `${/^[AEIOU]/.test(kind.noun) ? 'an' : 'a'} ${kind.noun.toLowerCase()}`
}

/** "Properties", "Addresses": for operation ids such as listProperties. */
function plural(kind: RecordKind): string {
  return `${kind.path.charAt(0).toUpperCase()}${kind.path.slice(1)}`
}

function readRoutes(fastify: FastifyInstance, kind: RecordKind, { db }: ModuleOptions): void {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const { path, tag } = kind
  const Record = Type.Ref(kind.noun)
  const tags = [tag]

  app.get(`/${path}`, {
    schema: {
      operationId: `list${plural(kind)}`, tags, summary: `List ${path}, oldest first`, querystring: ListRecordsQuerySchema,
      response: { 200: ok(Page(Record), `A page of ${path}`), ...problems(400, 401, 403) }
    }
  }, async (request, reply) => {
    const page = await records.listRecordsJson(db, kind, tenantOf(request), pageRequest(request), request.query)
    return sendJsonStream(reply, page)
  })

  app.get(`/${path}/:id`, {
    config: { claim: CLAIM_SCOPE[kind.table] },
    schema: {
      operationId: `get${kind.noun}`, tags, summary: `Get ${oneOf(kind)} (also with the apiClaim of a call that names it)`, params: IdParamsSchema,
      response: { 200: ok(Record, `The ${kind.noun.toLowerCase()}`, ['ETag']), ...problems(400, 401, 403, 404) }
    }
  }, async (request, reply) => {
    const record = await records.getRecord(db, kind, tenantOf(request), request.params.id)
    setETag(reply, record.version)
    return record
  })

  app.get(`/${path}/:id/activities`, {
    schema: {
      operationId: `list${kind.noun}Activities`, tags, summary: `List the activity log of ${oneOf(kind)}, newest first`, params: IdParamsSchema,
      querystring: PageQuerySchema, response: { 200: ok(Page(Type.Ref('Activity')), 'A page of activity entries'), ...problems(400, 401, 403, 404) }
    }
  }, async (request) => records.listRecordActivities(db, kind, tenantOf(request), request.params.id, pageRequest(request)))
}

/** An API-only process tells the schedulers of the deliveries a write fired and of the processes it autostarted. */
function announceWork(wakeups: ModuleOptions['wakeups'], triggered: number, autostarted: number): void {
  if (triggered > 0) wakeups.announce(['deliveries'])
  if (autostarted > 0) wakeups.announce(['deliveries', 'instance_steps', 'outbox_mails'])
}

function writeRoutes(fastify: FastifyInstance, kind: RecordKind, { db, clock, wakeups }: ModuleOptions): void {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const { path, tag } = kind
  const Record = Type.Ref(kind.noun)
  const tags = [tag]

  app.post(`/${path}`, {
    schema: {
      operationId: `create${kind.noun}`, tags, summary: `Create ${oneOf(kind)}`,
      description: `Fires the triggers and autostarts that watch new ${path}. With an Idempotency-Key, a retried create ` +
        `answers 200 with the ${kind.noun.toLowerCase()} the first request created, as it is now, and fires nothing again.`,
      headers: CreateRecordHeadersSchema, body: CreateRecordSchema,
      response: {
        200: ok(Record, `The ${kind.noun.toLowerCase()} an earlier create with the same Idempotency-Key created`, ['ETag', 'Location', 'Idempotent-Replayed']),
        201: ok(Record, `The created ${kind.noun.toLowerCase()}`, ['ETag', 'Location']),
        ...problems(400, 401, 403, 409, 422)
      }
    }
  }, async (request, reply) => {
    const written = await records.createRecord(db, clock, kind, tenantOf(request), request.body, request.headers['idempotency-key'])
    announceWork(wakeups, written.triggered.length, written.autostarted)
    markCreated(request, reply, written.record, written.created)
    return reply.send(written.record)
  })

  app.patch(`/${path}/:id`, {
    config: { claim: CLAIM_SCOPE[kind.table] },
    schema: {
      operationId: `update${kind.noun}`, tags,
      summary: `Update ${oneOf(kind)}; fields are merged (null removes a field). A provider may update fields with the apiClaim of a call that names it`,
      description: `An update that changes nothing answers with the ${kind.noun.toLowerCase()} as it was: its version (and ETag) stays, and nothing fires.`,
      params: IdParamsSchema, headers: IfMatchHeadersSchema, body: UpdateRecordSchema,
      response: { 200: ok(Record, `The updated ${kind.noun.toLowerCase()}`, ['ETag']), ...problems(400, 401, 403, 404, 409, 412, 422) }
    }
  }, async (request, reply) => {
    const expected = expectedVersions(request.headers['if-match'])
    const claim = claimOf(request)
    if (claim && request.body.maintainerUserId !== undefined) throw forbidden('An apiClaim may update the fields of a record, not its maintainer.')
    const { record, triggered, autostarted } = await records.updateRecord(db, clock, kind, tenantOf(request), request.params.id, request.body, expected, claim)
    announceWork(wakeups, triggered.length, autostarted)
    setETag(reply, record.version)
    return record
  })

  app.delete(`/${path}/:id`, {
    schema: {
      operationId: `delete${kind.noun}`, tags, summary: `Delete ${oneOf(kind)} no process instance links`, params: IdParamsSchema,
      headers: IfMatchHeadersSchema, response: { 204: noContent(`The ${kind.noun.toLowerCase()} is deleted`), ...problems(400, 401, 403, 404, 409, 412) }
    }
  }, async (request, reply) => {
    await records.deleteRecord(db, clock, kind, tenantOf(request), request.params.id, expectedVersions(request.headers['if-match']))
    return reply.code(204).send(null)
  })
}
