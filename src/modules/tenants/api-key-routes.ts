import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../module-options.js'
import { setCreatedLocation } from '../../lib/location.js'
import { pageRequest } from '../../lib/pagination.js'
import { IdParamsSchema, noContent, ok, Page, PageQuerySchema, problems } from '../../schemas/common.js'
import { ApiKeySchema, CreateApiKeySchema, NewApiKeySchema, TenantKeyParamsSchema } from './schemas.js'
import * as tenants from './service.js'

export default async function apiKeyRoutes(fastify: FastifyInstance, { db, clock, knownKeys }: ModuleOptions): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addSchema(ApiKeySchema)
  app.addSchema(NewApiKeySchema)
  const config = { auth: 'operator' as const }
  const tags = ['tenants']

  app.post('/tenants/:id/api-keys', {
    config,
    schema: {
      operationId: 'createApiKey', tags, summary: 'Create an API key for a tenant (the key is shown once)', params: IdParamsSchema,
      body: CreateApiKeySchema,
      description: 'A tenant being deleted (deletingSince) gets no new key: 409.',
      response: { 201: ok(Type.Ref('NewApiKey'), 'The new key, with its secret shown this once', ['Location']), ...problems(400, 401, 403, 404, 409, 422) }
    }
  }, async (request, reply) => {
    const key = await tenants.createApiKey(db, request.params.id, request.body.name)
    setCreatedLocation(request, reply, key.id)
    return reply.code(201).send(key)
  })

  app.get('/tenants/:id/api-keys', {
    config,
    schema: {
      operationId: 'listApiKeys', tags, summary: 'List a tenant\'s API keys (without secrets)', params: IdParamsSchema, querystring: PageQuerySchema,
      response: { 200: ok(Page(Type.Ref('ApiKey')), 'A page of the tenant\'s keys'), ...problems(400, 401, 403, 404) }
    }
  }, async (request) => tenants.listApiKeys(db, request.params.id, pageRequest(request)))

  app.get('/tenants/:id/api-keys/:keyId', {
    config,
    schema: {
      operationId: 'getApiKey', tags, summary: 'Get one of a tenant\'s API keys (without its secret)', params: TenantKeyParamsSchema,
      response: { 200: ok(Type.Ref('ApiKey'), 'The key, without its secret'), ...problems(400, 401, 403, 404) }
    }
  }, async (request) => tenants.getApiKey(db, request.params.id, request.params.keyId))

  app.delete('/tenants/:id/api-keys/:keyId', {
    config,
    schema: {
      operationId: 'revokeApiKey', tags, summary: 'Revoke an API key', params: TenantKeyParamsSchema,
      response: { 204: noContent('The key is revoked'), ...problems(400, 401, 403, 404) }
    }
  }, async (request, reply) => {
    await tenants.revokeApiKey(db, clock, request.params.id, request.params.keyId)
    knownKeys.forgetTenant(request.params.id)
    return reply.code(204).send(null)
  })
}
