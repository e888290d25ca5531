import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../../module-options.js'
import { setCreatedLocation } from '../../../lib/location.js'
import { pageRequest } from '../../../lib/pagination.js'
import { expectedVersions, setETag } from '../../../lib/versioning.js'
import { tenantOf } from '../../../plugins/auth.js'
import { IdParamsSchema, IfMatchHeadersSchema, noContent, TemplateIfMatchHeadersSchema, ok, Page, problems } from '../../../schemas/common.js'
import { templateSchemas } from '../templates/schemas.js'
import { reorderSteps } from './order.js'
import { CreateStepSchema, ListStepsQuerySchema, ReorderStepsSchema, StepParamsSchema, UpdateStepSchema } from './schemas.js'
import * as steps from './service.js'

const ProcessTemplateStep = Type.Ref('ProcessTemplateStep')

export default async function stepRoutes(fastify: FastifyInstance, { db, clock, secrets, targets }: ModuleOptions): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  for (const schema of templateSchemas) app.addSchema(schema)
  const tags = ['templates']
  const withETag = <T extends { version: number }>(reply: Parameters<typeof setETag>[0], resource: T) => {
    setETag(reply, resource.version)
    return resource
  }

  app.post('/process-templates/:id/steps', {
    schema: {
      operationId: 'createProcessTemplateStep', tags, summary: 'Add a step at the end, or at `position` shifting later steps',
      description: 'If-Match names the template\'s version (as for steps/order): the step is added only to the order the client saw, where `position` counts.',
      params: IdParamsSchema, headers: TemplateIfMatchHeadersSchema, body: CreateStepSchema,
      response: { 201: ok(ProcessTemplateStep, 'The created step; ETag is the step\'s own version, not the template\'s that If-Match names', ['ETag', 'Location']), ...problems(400, 401, 403, 404, 409, 412, 422) }
    }
  }, async (request, reply) => {
    const expected = expectedVersions(request.headers['if-match'])
    const step = await steps.createStep(db, clock, { secrets, targets }, tenantOf(request), request.params.id, request.body, expected)
    setCreatedLocation(request, reply, step.id)
    return reply.code(201).send(withETag(reply, step))
  })

  app.get('/process-templates/:id/steps', {
    schema: {
      operationId: 'listProcessTemplateSteps', tags, summary: 'List the steps of a process template by position', params: IdParamsSchema,
      querystring: ListStepsQuerySchema, response: { 200: ok(Page(ProcessTemplateStep), 'A page of the template\'s steps'), ...problems(400, 401, 403, 404) }
    }
  }, async (request) => steps.listSteps(db, tenantOf(request), request.params.id, pageRequest(request)))

  app.put('/process-templates/:id/steps/order', {
    schema: {
      operationId: 'reorderProcessTemplateSteps', tags, summary: 'Reorder all steps of a process template at once', params: IdParamsSchema,
      description: 'The order the steps already have changes nothing: the template answers as it was, its version (and ETag) and updatedAt stay.',
      headers: TemplateIfMatchHeadersSchema, body: ReorderStepsSchema,
      response: { 200: ok(Type.Ref('ProcessTemplate'), 'The template with its steps in the new order; ETag is the template\'s version', ['ETag']), ...problems(400, 401, 403, 404, 412, 422) }
    }
  }, async (request, reply) => {
    const expected = expectedVersions(request.headers['if-match'])
    return withETag(reply, await reorderSteps(db, clock, tenantOf(request), request.params.id, request.body.stepIds, expected))
  })

  app.get('/process-templates/:id/steps/:stepId', {
    schema: {
      operationId: 'getProcessTemplateStep', tags, summary: 'Get a step of a process template', params: StepParamsSchema,
      response: { 200: ok(ProcessTemplateStep, 'The step; ETag is its version', ['ETag']), ...problems(400, 401, 403, 404) }
    }
  }, async (request, reply) => withETag(reply, await steps.getStep(db, tenantOf(request), request.params.id, request.params.stepId)))

  app.patch('/process-templates/:id/steps/:stepId', {
    schema: {
      operationId: 'updateProcessTemplateStep', tags, summary: 'Update a step (If-Match names the step\'s version)', params: StepParamsSchema,
      description: 'An update that changes nothing (parameters equal to the stored ones once defaults are filled in, say) answers with the step as it was: its version (and ETag) and updatedAt stay. A target sent counts as a change, since its secret is write-only. ' +
        'A new `kind` drops the settings only the former kind has (a webhook\'s serviceId, target with its secret, and parameters; ' +
        'email, writeValues, decision, followUp) unless the request gives them; given to a kind that takes none, they answer 422 with a pointer to each.',
      headers: IfMatchHeadersSchema, body: UpdateStepSchema,
      response: { 200: ok(ProcessTemplateStep, 'The updated step', ['ETag']), ...problems(400, 401, 403, 404, 412, 422) }
    }
  }, async (request, reply) => {
    const { id, stepId } = request.params
    const expected = expectedVersions(request.headers['if-match'])
    return withETag(reply, await steps.updateStep(db, clock, { secrets, targets }, tenantOf(request), id, stepId, request.body, expected))
  })

  app.delete('/process-templates/:id/steps/:stepId', {
    schema: {
      operationId: 'deleteProcessTemplateStep', tags, summary: 'Delete a step; later steps move up', params: StepParamsSchema,
      headers: IfMatchHeadersSchema, response: { 204: noContent('The step is deleted'), ...problems(400, 401, 403, 404, 409, 412, 422) }
    }
  }, async (request, reply) => {
    const { id, stepId } = request.params
    await steps.deleteStep(db, clock, tenantOf(request), id, stepId, expectedVersions(request.headers['if-match']))
    return reply.code(204).send(null)
  })
}
