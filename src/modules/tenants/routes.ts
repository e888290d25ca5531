import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../module-options.js'
import { setCreatedLocation } from '../../lib/location.js'
import { pageRequest } from '../../lib/pagination.js'
import { IdParamsSchema, noContent, ok, Page, PageQuerySchema, problems } from '../../schemas/common.js'
import { CreateTenantSchema, TenantSchema, UpdateTenantSchema } from './schemas.js'
import * as tenants from './service.js'

const Tenant = Type.Ref('Tenant')

export default async function tenantRoutes(fastify: FastifyInstance, { db, clock, knownKeys }: ModuleOptions): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addSchema(TenantSchema)
  const config = { auth: 'operator' as const }
  const tags = ['tenants']

  app.post('/tenants', {
    config,
    schema: {
      operationId: 'createTenant', tags, summary: 'Create a tenant', body: CreateTenantSchema,
      response: { 201: ok(Tenant, 'The created tenant', ['Location']), ...problems(400, 401, 403, 409, 422) }
    }
  }, async (request, reply) => {
    const tenant = await tenants.createTenant(db, request.body)
    setCreatedLocation(request, reply, tenant.id)
    return reply.code(201).send(tenant)
  })

  app.get('/tenants', {
    config,
    schema: {
      operationId: 'listTenants', tags, summary: 'List tenants', querystring: PageQuerySchema,
      response: { 200: ok(Page(Tenant), 'A page of tenants'), ...problems(400, 401, 403) }
    }
  }, async (request) => tenants.listTenants(db, pageRequest(request)))

  app.get('/tenants/:id', {
    config,
    schema: {
      operationId: 'getTenant', tags, summary: 'Get a tenant', params: IdParamsSchema,
      response: { 200: ok(Tenant, 'The tenant'), ...problems(400, 401, 403, 404) }
    }
  }, async (request) => tenants.getTenant(db, request.params.id))

  app.patch('/tenants/:id', {
    config,
    schema: {
      operationId: 'updateTenant', tags, summary: 'Update a tenant', params: IdParamsSchema, body: UpdateTenantSchema,
      description: 'An update that changes nothing answers with the tenant as it was: its updatedAt stays.',
      response: { 200: ok(Tenant, 'The updated tenant'), ...problems(400, 401, 403, 404, 409, 422) }
    }
  }, async (request) => tenants.updateTenant(db, clock, request.params.id, request.body))

  app.delete('/tenants/:id', {
    config,
    schema: {
      operationId: 'deleteTenant', tags, summary: 'Delete a tenant and everything it owns', params: IdParamsSchema,
      description: 'The tenant is first marked as being deleted (deletingSince): from then on its apiClaims are refused (403) ' +
        'and none of its processes starts; its API keys are refused (401) at once by the API process that deletes it, and by ' +
        'the others within 2 s, as the keys they hold in their cache expire. A large tenant then loses its rows in parts, each a short ' +
        'transaction of its own, and goes with the rest in one: a deletion cut off in between leaves part of the tenant, ' +
        'marked: a worker finishes it once it has been marked for 10 minutes, and deleting it again finishes it at once.',
      response: { 204: noContent('The tenant and everything it owned are deleted'), ...problems(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => {
    await tenants.markTenantDeleting(db, clock, request.params.id)
    // Committed: the tenant's keys are looked up afresh here, and refused; other API processes refuse them within the keys' ttl.
    knownKeys.forgetTenant(request.params.id)
    await tenants.deleteTenant(db, request.params.id)
    return reply.code(204).send(null)
  })
}
