import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../module-options.js'
import { pageRequest } from '../../lib/pagination.js'
import { tenantOf } from '../../plugins/auth.js'
import { IdParamsSchema, ok, Page, problems } from '../../schemas/common.js'
import { DeliveryAttemptSchema, DeliverySchema, ListDeliveriesQuerySchema, RecoverDeliveriesSchema, RecoveryResultSchema } from './schemas.js'
import * as deliveries from './service.js'

const Delivery = Type.Ref('Delivery')

export default async function deliveryRoutes(fastify: FastifyInstance, { db, clock, wakeups }: ModuleOptions): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addSchema(DeliveryAttemptSchema)
  app.addSchema(DeliverySchema)
  app.addSchema(RecoveryResultSchema)
  const tags = ['deliveries']

  app.get('/deliveries', {
    schema: {
      operationId: 'listDeliveries', tags, summary: 'List webhook deliveries with their attempts, newest first', querystring: ListDeliveriesQuerySchema,
      response: { 200: ok(Page(Delivery), 'A page of deliveries, each with its attempts'), ...problems(400, 401, 403) }
    }
  }, async (request) => deliveries.listDeliveries(db, tenantOf(request), pageRequest(request), request.query))

  app.get('/deliveries/:id', {
    schema: {
      operationId: 'getDelivery', tags, summary: 'Get a webhook delivery with its attempts', params: IdParamsSchema,
      response: { 200: ok(Delivery, 'The delivery with its attempts'), ...problems(400, 401, 403, 404) }
    }
  }, async (request) => deliveries.getDelivery(db, tenantOf(request), request.params.id))

  app.post('/deliveries/:id/replay', {
    schema: {
      operationId: 'replayDelivery', tags, summary: 'Send a finished delivery again, as a new round with the same deliveryId',
      description: 'For a provider that lost a call or wants it again. A delivery still pending or running, or one of a step that ' +
        'has not ended (a failed step is retried through its process), answers 409.',
      params: IdParamsSchema,
      response: { 202: ok(Delivery, 'The delivery, queued for a new round'), ...problems(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => {
    const delivery = await deliveries.replay(db, clock.now(), tenantOf(request), request.params.id)
    wakeups.announce(['deliveries'])
    return reply.code(202).send(delivery)
  })

  app.post('/marketplace-services/:id/recover', {
    schema: {
      operationId: 'recoverDeliveries', tags, summary: 'Queue this tenant\'s failed deliveries of a service again, after the provider\'s outage',
      description: `Failed record-change deliveries, and those of webhook steps still failed in a running process, that gave up at or after ` +
        `\`since\`: each goes out again as a new round with the same deliveryId, at most ${deliveries.RECOVERY_LIMIT} per call, those that gave ` +
        'up longest ago first: call again for the rest. One queued again that has failed again since waits behind the rest, so ' +
        'successive calls reach every one while the provider still fails. ' +
        'With `dryRun` nothing changes and the answer says what would be queued. Each one queued is logged as an activity.',
      params: IdParamsSchema, body: RecoverDeliveriesSchema,
      response: { 200: ok(Type.Ref('DeliveryRecovery'), 'The deliveries queued again, or in a dry run those that would be'), ...problems(400, 401, 403, 404, 409) }
    }
  }, async (request) => deliveries.recover(db, clock, wakeups, tenantOf(request), request.params.id, request.body))
}
