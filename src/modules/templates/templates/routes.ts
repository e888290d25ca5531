import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../../module-options.js'
import { pageRequest } from '../../../lib/pagination.js'
import { expectedVersion, setETag } from '../../../lib/versioning.js'
import { tenantOf } from '../../../plugins/auth.js'
import { IdParamsSchema, IfMatchHeadersSchema, NoContent, Page, problems } from '../../../schemas/common.js'
import {
  CopyTemplateSchema, CreateTemplateSchema, ListTemplatesQuerySchema, UpdateTemplateSchema, templateSchemas, type Template
} from './schemas.js'
import * as templates from './service.js'

const ProcessTemplate = Type.Ref('ProcessTemplate')

export default async function templateRoutes(fastify: FastifyInstance, { db, clock }: ModuleOptions): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  for (const schema of templateSchemas) app.addSchema(schema)
  const tags = ['templates']
  const withETag = (reply: Parameters<typeof setETag>[0], template: Template) => {
    setETag(reply, template.version)
    return template
  }

  app.post('/process-templates', {
    schema: {
      tags, summary: 'Create a process template (inactive until activated)', body: CreateTemplateSchema,
      response: { 201: ProcessTemplate, ...problems(400, 401, 403, 422) }
    }
  }, async (request, reply) => reply.code(201).send(withETag(reply, await templates.createTemplate(db, clock, tenantOf(request), request.body))))

  app.get('/process-templates', {
    schema: {
      tags, summary: 'List process templates (without their steps)', querystring: ListTemplatesQuerySchema,
      response: { 200: Page(Type.Ref('ProcessTemplateSummary')), ...problems(400, 401, 403) }
    }
  }, async (request) => templates.listTemplates(db, tenantOf(request), pageRequest(request.query), request.query))

  app.get('/process-templates/:id', {
    schema: {
      tags, summary: 'Get a process template with its steps', params: IdParamsSchema,
      response: { 200: ProcessTemplate, ...problems(400, 401, 403, 404) }
    }
  }, async (request, reply) => withETag(reply, await templates.getTemplate(db, tenantOf(request), request.params.id)))

  app.patch('/process-templates/:id', {
    schema: {
      tags, summary: 'Update or (de)activate a process template', params: IdParamsSchema, headers: IfMatchHeadersSchema,
      body: UpdateTemplateSchema, response: { 200: ProcessTemplate, ...problems(400, 401, 403, 404, 412, 422) }
    }
  }, async (request, reply) => {
    const expected = expectedVersion(request.headers['if-match'])
    return withETag(reply, await templates.updateTemplate(db, clock, tenantOf(request), request.params.id, request.body, expected))
  })

  app.delete('/process-templates/:id', {
    schema: {
      tags, summary: 'Delete a process template no process was started from', params: IdParamsSchema, headers: IfMatchHeadersSchema,
      response: { 204: NoContent, ...problems(400, 401, 403, 404, 409, 412) }
    }
  }, async (request, reply) => {
    await templates.deleteTemplate(db, tenantOf(request), request.params.id, expectedVersion(request.headers['if-match']))
    return reply.code(204).send(null)
  })

  app.post('/process-templates/:id/copy', {
    schema: {
      tags, summary: 'Copy a process template with all its steps (the copy is inactive)', params: IdParamsSchema,
      body: CopyTemplateSchema, response: { 201: ProcessTemplate, ...problems(400, 401, 403, 404) }
    }
  }, async (request, reply) => {
    const copy = await templates.copyTemplate(db, clock, tenantOf(request), request.params.id, request.body)
    return reply.code(201).send(withETag(reply, copy))
  })
}
