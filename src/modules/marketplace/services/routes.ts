import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../../module-options.js'
import { setCreatedLocation } from '../../../lib/location.js'
import { pageRequest } from '../../../lib/pagination.js'
import { expectedVersions, setETag } from '../../../lib/versioning.js'
import { tenantOrOperator } from '../../../plugins/auth.js'
import { answerInFull } from '../../../plugins/conditional-get.js'
import { IdParamsSchema, IfMatchHeadersSchema, noContent, ok, Page, problems } from '../../../schemas/common.js'
import {
  CreateServiceSchema, ListServicesQuerySchema, MarketplaceServiceSchema, MarketplaceServiceWithSecretSchema, UpdateServiceSchema
} from './schemas.js'
import * as services from './service.js'

const MarketplaceService = Type.Ref('MarketplaceService')

export default async function serviceRoutes(fastify: FastifyInstance, { db, clock, secrets, targets }: ModuleOptions): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addSchema(MarketplaceServiceSchema)
  app.addSchema(MarketplaceServiceWithSecretSchema)
  const operator = { auth: 'operator' as const }
  const any = { auth: 'any' as const }
  const tags = ['marketplace']

  app.post('/marketplace-services', {
    config: operator,
    schema: {
      operationId: 'createMarketplaceService', tags, summary: 'Offer a marketplace service (the signing secret is shown once)',
      body: CreateServiceSchema,
      response: {
        201: ok(Type.Ref('MarketplaceServiceWithSecret'), 'The created service, with its signing secret shown this once', ['ETag', 'Location']),
        ...problems(400, 401, 403, 422)
      }
    }
  }, async (request, reply) => {
    const created = await services.createService({ db, clock, secrets, targets }, request.body)
    setETag(reply, created.version)
    setCreatedLocation(request, reply, created.id)
    return reply.code(201).send(created)
  })

  app.get('/marketplace-services', {
    config: any,
    schema: {
      operationId: 'listMarketplaceServices', tags, summary: 'List marketplace services (a tenant sees active ones and those it activated)',
      querystring: ListServicesQuerySchema,
      response: { 200: ok(Page(MarketplaceService), 'A page of marketplace services'), ...problems(400, 401, 403, 422) }
    }
  }, async (request) => {
    const { limit: _limit, cursor: _cursor, ...filter } = request.query
    return services.listServices(db, tenantOrOperator(request), pageRequest(request), filter)
  })

  app.get('/marketplace-services/:id', {
    config: any,
    schema: {
      operationId: 'getMarketplaceService', tags, summary: 'Get a marketplace service', params: IdParamsSchema,
      response: { 200: ok(MarketplaceService, 'The marketplace service', ['ETag']), ...problems(400, 401, 403, 404) }
    }
  }, async (request, reply) => {
    const service = await services.getService(db, tenantOrOperator(request), request.params.id)
    setETag(reply, service.version)
    // A tenant's answer shows its own activation, which moves no version of the (global) service.
    if (service.activated !== undefined) answerInFull(reply)
    return service
  })

  app.patch('/marketplace-services/:id', {
    config: operator,
    schema: {
      operationId: 'updateMarketplaceService', tags, summary: 'Update a marketplace service; a new secret keeps the old one valid for 24 hours',
      description: 'An update that changes nothing (the secret it has counts as no change) answers with the service as it was: its version (and ETag) and updatedAt stay.',
      params: IdParamsSchema, headers: IfMatchHeadersSchema, body: UpdateServiceSchema,
      response: { 200: ok(MarketplaceService, 'The updated service', ['ETag']), ...problems(400, 401, 403, 404, 409, 412, 422) }
    }
  }, async (request, reply) => {
    const expected = expectedVersions(request.headers['if-match'])
    const service = await services.updateService({ db, clock, secrets, targets }, request.params.id, request.body, expected)
    setETag(reply, service.version)
    return service
  })

  app.delete('/marketplace-services/:id', {
    config: operator,
    schema: {
      operationId: 'deleteMarketplaceService', tags, summary: 'Delete a marketplace service no template step uses', params: IdParamsSchema,
      headers: IfMatchHeadersSchema, response: { 204: noContent('The service is deleted'), ...problems(400, 401, 403, 404, 409, 412) }
    }
  }, async (request, reply) => {
    await services.deleteService(db, request.params.id, expectedVersions(request.headers['if-match']))
    return reply.code(204).send(null)
  })
}
