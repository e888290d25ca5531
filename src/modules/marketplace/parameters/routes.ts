import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../../module-options.js'
import { setCreatedLocation } from '../../../lib/location.js'
import { pageRequest } from '../../../lib/pagination.js'
import { tenantOrOperator } from '../../../plugins/auth.js'
import { IdParamsSchema, noContent, ok, Page, PageQuerySchema, problems } from '../../../schemas/common.js'
import { CreateParameterSchema, ParameterParamsSchema, UpdateParameterSchema, WebhookParameterSchema } from './schemas.js'
import * as parameters from './service.js'

const WebhookParameter = Type.Ref('WebhookParameter')

export default async function parameterRoutes(fastify: FastifyInstance, { db, clock }: ModuleOptions): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addSchema(WebhookParameterSchema)
  const operator = { auth: 'operator' as const }
  const any = { auth: 'any' as const }
  const tags = ['marketplace']

  app.post('/marketplace-services/:id/parameters', {
    config: operator,
    schema: {
      operationId: 'createWebhookParameter', tags, summary: 'Define a parameter the service accepts', params: IdParamsSchema,
      body: CreateParameterSchema,
      response: { 201: ok(WebhookParameter, 'The created parameter definition', ['Location']), ...problems(400, 401, 403, 404, 409, 422) }
    }
  }, async (request, reply) => {
    const parameter = await parameters.createParameter(db, clock, request.params.id, request.body)
    setCreatedLocation(request, reply, parameter.id)
    return reply.code(201).send(parameter)
  })

  app.get('/marketplace-services/:id/parameters', {
    config: any,
    schema: {
      operationId: 'listWebhookParameters', tags, summary: 'List the parameters a service accepts', params: IdParamsSchema,
      querystring: PageQuerySchema, response: { 200: ok(Page(WebhookParameter), 'A page of the service\'s parameter definitions'), ...problems(400, 401, 403, 404) }
    }
  }, async (request) =>
    parameters.listParameters(db, tenantOrOperator(request), request.params.id, pageRequest(request)))

  app.get('/marketplace-services/:id/parameters/:parameterId', {
    config: any,
    schema: {
      operationId: 'getWebhookParameter', tags, summary: 'Get a parameter definition', params: ParameterParamsSchema,
      response: { 200: ok(WebhookParameter, 'The parameter definition'), ...problems(400, 401, 403, 404) }
    }
  }, async (request) =>
    parameters.getParameter(db, tenantOrOperator(request), request.params.id, request.params.parameterId))

  app.patch('/marketplace-services/:id/parameters/:parameterId', {
    config: operator,
    schema: {
      operationId: 'updateWebhookParameter', tags,
      summary: 'Update a parameter definition (name, type and removed enum values only while no step passes it)',
      params: ParameterParamsSchema, body: UpdateParameterSchema,
      response: { 200: ok(WebhookParameter, 'The updated parameter definition'), ...problems(400, 401, 403, 404, 409, 422) }
    }
  }, async (request) =>
    parameters.updateParameter(db, clock, request.params.id, request.params.parameterId, request.body))

  app.delete('/marketplace-services/:id/parameters/:parameterId', {
    config: operator,
    schema: {
      operationId: 'deleteWebhookParameter', tags, summary: 'Delete a parameter definition no template step passes', params: ParameterParamsSchema,
      response: { 204: noContent('The parameter definition is deleted'), ...problems(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => {
    await parameters.deleteParameter(db, request.params.id, request.params.parameterId)
    return reply.code(204).send(null)
  })
}
