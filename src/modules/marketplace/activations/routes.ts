import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../../module-options.js'
import { tenantOf } from '../../../plugins/auth.js'
import { IdParamsSchema, noContent, ok, problems } from '../../../schemas/common.js'
import * as activations from './service.js'
import { ServiceActivationSchema } from '../services/schemas.js'

const ServiceActivation = Type.Ref('ServiceActivation')

export default async function activationRoutes(fastify: FastifyInstance, { db, clock }: ModuleOptions): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addSchema(ServiceActivationSchema)
  const config = { auth: 'tenant' as const }
  const tags = ['marketplace']

  app.put('/marketplace-services/:id/activation', {
    config,
    schema: {
      operationId: 'activateService', tags, summary: 'Activate an active marketplace service for the calling tenant (idempotent)',
      params: IdParamsSchema, response: { 200: ok(ServiceActivation, 'The service is activated for the calling tenant'), ...problems(400, 401, 403, 404, 422) }
    }
  }, async (request) => activations.activateService(db, clock, tenantOf(request), request.params.id))

  app.get('/marketplace-services/:id/activation', {
    config,
    schema: {
      operationId: 'getServiceActivation', tags, summary: 'Whether the calling tenant has activated the service (404 when not)',
      params: IdParamsSchema, response: { 200: ok(ServiceActivation, 'The calling tenant\'s activation of the service'), ...problems(400, 401, 403, 404) }
    }
  }, async (request) => activations.getActivation(db, tenantOf(request), request.params.id))

  app.delete('/marketplace-services/:id/activation', {
    config,
    schema: {
      operationId: 'deactivateService', tags, summary: 'Deactivate the service for the calling tenant (idempotent; 409 while its templates use it)',
      params: IdParamsSchema,
      response: { 204: noContent('The service is not activated for the calling tenant'), ...problems(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => {
    await activations.deactivateService(db, clock, tenantOf(request), request.params.id)
    return reply.code(204).send(null)
  })
}
