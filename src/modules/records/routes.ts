import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../module-options.js'
import { pageRequest, sendJsonStream } from '../../lib/pagination.js'
import { expectedVersion, setETag } from '../../lib/versioning.js'
import { forbidden } from '../../errors.js'
import { claimOf, tenantOf, type ClaimScope } from '../../plugins/auth.js'
import { IdParamsSchema, IfMatchHeadersSchema, NoContent, Page, PageQuerySchema, problems } from '../../schemas/common.js'
import { CreateRecordSchema, ListRecordsQuerySchema, recordSchema, UpdateRecordSchema, type RecordKind } from './schemas.js'
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

function readRoutes(fastify: FastifyInstance, kind: RecordKind, { db }: ModuleOptions): void {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const { path, tag } = kind
  const Record = Type.Ref(kind.noun)
  const tags = [tag]

  app.get(`/${path}`, {
    schema: {
      tags, summary: `List ${path}, oldest first`, querystring: ListRecordsQuerySchema,
      response: { 200: Page(Record), ...problems(400, 401, 403) }
    }
  }, async (request, reply) => {
    const page = await records.listRecordsJson(db, kind, tenantOf(request), pageRequest(request.query), request.query)
    return sendJsonStream(reply, page)
  })

  app.get(`/${path}/:id`, {
    config: { claim: CLAIM_SCOPE[kind.table] },
    schema: {
      tags, summary: `Get ${oneOf(kind)} (also with the apiClaim of a call that names it)`, params: IdParamsSchema,
      response: { 200: Record, ...problems(400, 401, 403, 404) }
    }
  }, async (request, reply) => {
    const record = await records.getRecord(db, kind, tenantOf(request), request.params.id)
    setETag(reply, record.version)
    return record
  })

  app.get(`/${path}/:id/activities`, {
    schema: {
      tags, summary: `List the activity log of ${oneOf(kind)}, newest first`, params: IdParamsSchema, querystring: PageQuerySchema,
      response: { 200: Page(Type.Ref('Activity')), ...problems(400, 401, 403, 404) }
    }
  }, async (request) => records.listRecordActivities(db, kind, tenantOf(request), request.params.id, pageRequest(request.query)))
}

function writeRoutes(fastify: FastifyInstance, kind: RecordKind, { db, clock }: ModuleOptions): void {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const { path, tag } = kind
  const Record = Type.Ref(kind.noun)
  const tags = [tag]

  app.post(`/${path}`, {
    schema: { tags, summary: `Create ${oneOf(kind)}`, body: CreateRecordSchema, response: { 201: Record, ...problems(400, 401, 403, 422) } }
  }, async (request, reply) => {
    const { record } = await records.createRecord(db, clock, kind, tenantOf(request), request.body)
    setETag(reply, record.version)
    return reply.code(201).send(record)
  })

  app.patch(`/${path}/:id`, {
    config: { claim: CLAIM_SCOPE[kind.table] },
    schema: {
      tags, summary: `Update ${oneOf(kind)}; fields are merged (null removes a field). A provider may update fields with the apiClaim of a call that names it`,
      params: IdParamsSchema, headers: IfMatchHeadersSchema, body: UpdateRecordSchema,
      response: { 200: Record, ...problems(400, 401, 403, 404, 412, 422) }
    }
  }, async (request, reply) => {
    const version = expectedVersion(request.headers['if-match'])
    const claim = claimOf(request)
    if (claim && request.body.maintainerUserId !== undefined) throw forbidden('An apiClaim may update the fields of a record, not its maintainer.')
    const by = claim ? { serviceId: claim.serviceId, deliveryId: claim.deliveryId } : undefined
    const { record } = await records.updateRecord(db, clock, kind, tenantOf(request), request.params.id, request.body, version, by)
    setETag(reply, record.version)
    return record
  })

  app.delete(`/${path}/:id`, {
    schema: {
      tags, summary: `Delete ${oneOf(kind)} no process instance links`, params: IdParamsSchema,
      response: { 204: NoContent, ...problems(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => {
    await records.deleteRecord(db, kind, tenantOf(request), request.params.id)
    return reply.code(204).send(null)
  })
}
