import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../module-options.js'
import { markCreated } from '../../lib/location.js'
import { pageRequest } from '../../lib/pagination.js'
import { setETag } from '../../lib/versioning.js'
import { tenantOf } from '../../plugins/auth.js'
import { answerInFull } from '../../plugins/conditional-get.js'
import { IdParamsSchema, ok, Page, PageQuerySchema, problems } from '../../schemas/common.js'
import {
  AdvanceSchema, CancelSchema, DeliverySummarySchema, InstanceSchema, InstanceStepSchema, InstanceSummarySchema,
  ListInstancesQuerySchema, StartHeadersSchema, StartInstanceSchema, StepParamsSchema, type StartInstance, type StartInstanceBody
} from './schemas.js'
import * as instances from './service.js'
import { ExpressionSchema } from '../templates/expressions/schema.js'

const Instance = Type.Ref('ProcessInstance')

/** What the route reads of a step of its answer (the schema's steps are references). */
interface StepView { delivery: { status: string; nextAttemptAt?: string | null } | null }

/** How far ahead a queued call counts as due: workers' clocks may differ from this one's, and a call released unopened waits a minute. */
const DUE_SOON_MS = 2 * 60_000

/**
 * Whether the process may change before its version moves on: a worker's claim turns a step running
 * (its delivery too, an attempt counted), and an expired lease or a released claim turns it back, none
 * with a new version. So while a call is in flight, or queued and due about now, the process is
 * answered in full; a call that waits for a later attempt changes nothing until it is claimed.
 */
function mayMoveUnversioned(steps: StepView[], now: Date): boolean {
  const soon = now.getTime() + DUE_SOON_MS
  return steps.some(({ delivery }) => delivery?.status === 'running' ||
    (delivery?.status === 'pending' && (!delivery.nextAttemptAt || Date.parse(delivery.nextAttemptAt) <= soon)))
}

export default async function instanceRoutes(fastify: FastifyInstance, { db, clock, wakeups }: ModuleOptions): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addSchema(ExpressionSchema)
  app.addSchema(DeliverySummarySchema)
  app.addSchema(InstanceStepSchema)
  app.addSchema(InstanceSummarySchema)
  app.addSchema(InstanceSchema)
  const tags = ['process instances']

  app.post('/process-instances', {
    schema: {
      operationId: 'createProcessInstance', tags, summary: 'Start a process from an active template',
      description: 'Copies the template\'s steps and enters the first one. With an Idempotency-Key, a retried start ' +
        'answers 200 with the process the first request started.',
      headers: StartHeadersSchema, body: StartInstanceSchema,
      response: {
        200: ok(Instance, 'The process an earlier start with the same Idempotency-Key started', ['ETag', 'Location', 'Idempotent-Replayed']),
        201: ok(Instance, 'The started process', ['ETag', 'Location']),
        ...problems(400, 401, 403, 409, 422)
      }
    }
  }, async (request, reply) => {
    const started = await instances.startInstance(db, clock, wakeups, tenantOf(request), startOf(request.body), request.headers['idempotency-key'])
    markCreated(request, reply, started.instance, started.created)
    return reply.send(started.instance)
  })

  app.get('/process-instances', {
    schema: {
      operationId: 'listProcessInstances', tags, summary: 'List process instances, newest first', querystring: ListInstancesQuerySchema,
      response: { 200: ok(Page(Type.Ref('ProcessInstanceSummary')), 'A page of processes, each with its current step'), ...problems(400, 401, 403) }
    }
  }, async (request) => instances.listInstances(db, tenantOf(request), pageRequest(request), request.query))

  app.get('/process-instances/:id', {
    schema: {
      operationId: 'getProcessInstance', tags, summary: 'Get a process instance with its steps and their deliveries', params: IdParamsSchema,
      response: { 200: ok(Instance, 'The process with its steps and their latest deliveries', ['ETag']), ...problems(400, 401, 403, 404) }
    }
  }, async (request, reply) => {
    const instance = await instances.getInstance(db, tenantOf(request), request.params.id)
    setETag(reply, instance.version)
    if (request.headers['if-none-match'] !== undefined && mayMoveUnversioned(instance.steps as StepView[], clock.now())) answerInFull(reply)
    return instance
  })

  app.post('/process-instances/:id/advance', {
    schema: {
      operationId: 'advanceProcessInstance', tags, summary: 'End the current step as done or skipped and start the next one',
      description: 'A due task: done or skipped. A failed webhook or automatic step: done (resolved by hand) or skipped. ' +
        'A due manual email step: done (sends its mail) or skipped. A decision (waiting, due or failed): done with decision yes or no. ' +
        'A waiting step of another kind, a due webhook not yet claimed, a due automatic step not yet taken, or a follow-up step ' +
        'waiting for its process: skipped. A webhook call in flight, an e-mail being sent, a stale stepId or a concurrent advance: 409.',
      params: IdParamsSchema, body: AdvanceSchema,
      response: { 200: ok(Instance, 'The process after the step ended and the next one started', ['ETag']), ...problems(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => {
    const instance = await instances.advanceInstance(db, clock, wakeups, tenantOf(request), request.params.id, request.body, 'via the API')
    setETag(reply, instance.version)
    return instance
  })

  app.post('/process-instances/:id/cancel', {
    schema: {
      operationId: 'cancelProcessInstance', tags, summary: 'Cancel a running process', params: IdParamsSchema, body: CancelSchema,
      response: { 200: ok(Instance, 'The cancelled process', ['ETag']), ...problems(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => {
    const instance = await instances.cancelProcess(db, clock, wakeups, tenantOf(request), request.params.id, request.body.note ?? null)
    setETag(reply, instance.version)
    return instance
  })

  app.post('/process-instances/:id/steps/:stepId/retry', {
    schema: {
      operationId: 'retryProcessInstanceStep', tags, summary: 'Send a failed webhook step back to the scheduler', params: StepParamsSchema,
      response: { 200: ok(Instance, 'The process with the step due again and its delivery in a new round', ['ETag']), ...problems(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => {
    const instance = await instances.retryStep(db, clock, wakeups, tenantOf(request), request.params.id, request.params.stepId)
    setETag(reply, instance.version)
    return instance
  })

  app.get('/process-instances/:id/activities', {
    schema: {
      operationId: 'listProcessInstanceActivities', tags, summary: 'List the activity entries of a process, newest first', params: IdParamsSchema,
      querystring: PageQuerySchema, response: { 200: ok(Page(Type.Ref('Activity')), 'A page of the process\'s activity entries'), ...problems(400, 401, 403, 404) }
    }
  }, async (request) => instances.listInstanceActivities(db, tenantOf(request), request.params.id, pageRequest(request)))
}

/** The start a body asks for: a record given as null is not linked, as one left out. */
function startOf({ propertyId, addressId, ...start }: StartInstanceBody): StartInstance {
  return { ...start, ...(propertyId ? { propertyId } : {}), ...(addressId ? { addressId } : {}) }
}
