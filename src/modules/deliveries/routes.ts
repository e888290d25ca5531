import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../../app.js'
import { pageRequest } from '../../lib/pagination.js'
import { tenantOf } from '../../plugins/auth.js'
import { IdParamsSchema, Page, problems } from '../../schemas/common.js'
import { DeliveryAttemptSchema, DeliverySchema, ListDeliveriesQuerySchema } from './schemas.js'
import * as deliveries from './service.js'

const Delivery = Type.Ref('Delivery')

export default async function deliveryRoutes(fastify: FastifyInstance, { db, clock }: ModuleOptions): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addSchema(DeliveryAttemptSchema)
  app.addSchema(DeliverySchema)
  const tags = ['deliveries']

  app.get('/deliveries', {
    schema: {
      tags, summary: 'List webhook deliveries with their attempts, newest first', querystring: ListDeliveriesQuerySchema,
      response: { 200: Page(Delivery), ...problems(400, 401, 403) }
    }
  }, async (request) => deliveries.listDeliveries(db, tenantOf(request), pageRequest(request.query), request.query))

  app.get('/deliveries/:id', {
    schema: {
      tags, summary: 'Get a webhook delivery with its attempts', params: IdParamsSchema,
      response: { 200: Delivery, ...problems(400, 401, 403, 404) }
    }
  }, async (request) => deliveries.getDelivery(db, tenantOf(request), request.params.id))

  app.post('/deliveries/:id/replay', {
    schema: {
      tags, summary: 'Send a finished delivery again, as a new round with the same deliveryId',
      description: 'For a provider that lost a call or wants it again. A delivery still pending or running, or one of a step that ' +
        'has not ended (a failed step is retried through its process), answers 409.',
      params: IdParamsSchema,
      response: { 202: Delivery, ...problems(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => reply.code(202).send(await deliveries.replay(db, clock.now(), tenantOf(request), request.params.id)))
}
