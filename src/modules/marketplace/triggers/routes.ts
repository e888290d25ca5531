import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../../module-options.js'
import { setCreatedLocation } from '../../../lib/location.js'
import { pageRequest } from '../../../lib/pagination.js'
import { tenantOrOperator } from '../../../plugins/auth.js'
import { IdParamsSchema, noContent, ok, Page, PageQuerySchema, problems } from '../../../schemas/common.js'
import * as triggers from './service.js'
import { CreateTriggerSchema, ServiceTriggerSchema, TriggerParamsSchema, UpdateTriggerSchema } from './schemas.js'

const ServiceTrigger = Type.Ref('ServiceTrigger')

export default async function triggerRoutes(fastify: FastifyInstance, { db, clock }: ModuleOptions): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addSchema(ServiceTriggerSchema)
  const operator = { auth: 'operator' as const }
  const any = { auth: 'any' as const }
  const tags = ['marketplace']

  app.post('/marketplace-services/:id/triggers', {
    config: operator,
    schema: {
      operationId: 'createServiceTrigger', tags, summary: 'Subscribe the service to property or address changes', params: IdParamsSchema,
      body: CreateTriggerSchema, response: { 201: ok(ServiceTrigger, 'The created trigger', ['Location']), ...problems(400, 401, 403, 404, 422) }
    }
  }, async (request, reply) => {
    const trigger = await triggers.createTrigger(db, clock, request.params.id, request.body)
    setCreatedLocation(request, reply, trigger.id)
    return reply.code(201).send(trigger)
  })

  app.get('/marketplace-services/:id/triggers', {
    config: any,
    schema: {
      operationId: 'listServiceTriggers', tags, summary: 'List the service\'s triggers', params: IdParamsSchema, querystring: PageQuerySchema,
      response: { 200: ok(Page(ServiceTrigger), 'A page of the service\'s triggers'), ...problems(400, 401, 403, 404) }
    }
  }, async (request) => triggers.listTriggers(db, tenantOrOperator(request), request.params.id, pageRequest(request)))

  app.get('/marketplace-services/:id/triggers/:triggerId', {
    config: any,
    schema: {
      operationId: 'getServiceTrigger', tags, summary: 'Get a trigger', params: TriggerParamsSchema,
      response: { 200: ok(ServiceTrigger, 'The trigger'), ...problems(400, 401, 403, 404) }
    }
  }, async (request) => triggers.getTrigger(db, tenantOrOperator(request), request.params.id, request.params.triggerId))

  app.patch('/marketplace-services/:id/triggers/:triggerId', {
    config: operator,
    schema: {
      operationId: 'updateServiceTrigger', tags, summary: 'Update a trigger', params: TriggerParamsSchema, body: UpdateTriggerSchema,
      response: { 200: ok(ServiceTrigger, 'The updated trigger'), ...problems(400, 401, 403, 404, 422) }
    }
  }, async (request) => triggers.updateTrigger(db, clock, request.params.id, request.params.triggerId, request.body))

  app.delete('/marketplace-services/:id/triggers/:triggerId', {
    config: operator,
    schema: {
      operationId: 'deleteServiceTrigger', tags, summary: 'Delete a trigger', params: TriggerParamsSchema,
      response: { 204: noContent('The trigger is deleted'), ...problems(400, 401, 403, 404) }
    }
  }, async (request, reply) => {
    await triggers.deleteTrigger(db, clock, request.params.id, request.params.triggerId)
    return reply.code(204).send(null)
  })
}
