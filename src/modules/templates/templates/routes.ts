import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../../module-options.js'
import { setCreatedLocation } from '../../../lib/location.js'
import { pageRequest } from '../../../lib/pagination.js'
import { expectedVersions, setETag } from '../../../lib/versioning.js'
import { tenantOf } from '../../../plugins/auth.js'
import { IdParamsSchema, IfMatchHeadersSchema, noContent, TemplateIfMatchHeadersSchema, ok, Page, problems } from '../../../schemas/common.js'
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
      operationId: 'createProcessTemplate', tags, summary: 'Create a process template (inactive until activated)', body: CreateTemplateSchema,
      response: { 201: ok(ProcessTemplate, 'The created template, without steps yet', ['ETag', 'Location']), ...problems(400, 401, 403, 422) }
    }
  }, async (request, reply) => {
    const template = await templates.createTemplate(db, clock, tenantOf(request), request.body)
    setCreatedLocation(request, reply, template.id)
    return reply.code(201).send(withETag(reply, template))
  })

  app.get('/process-templates', {
    schema: {
      operationId: 'listProcessTemplates', tags, summary: 'List process templates (without their steps)', querystring: ListTemplatesQuerySchema,
      response: { 200: ok(Page(Type.Ref('ProcessTemplateSummary')), 'A page of templates, their steps counted'), ...problems(400, 401, 403) }
    }
  }, async (request) => templates.listTemplates(db, tenantOf(request), pageRequest(request), request.query))

  app.get('/process-templates/:id', {
    schema: {
      operationId: 'getProcessTemplate', tags, summary: 'Get a process template with its steps', params: IdParamsSchema,
      response: { 200: ok(ProcessTemplate, 'The template with its steps', ['ETag']), ...problems(400, 401, 403, 404) }
    }
  }, async (request, reply) => withETag(reply, await templates.getTemplate(db, tenantOf(request), request.params.id)))

  app.patch('/process-templates/:id', {
    schema: {
      operationId: 'updateProcessTemplate', tags, summary: 'Update or (de)activate a process template', params: IdParamsSchema,
      description: 'An update that changes nothing (activating an active template, say) answers with the template as it was: its version (and ETag) and updatedAt stay. Activating still checks the steps.',
      headers: IfMatchHeadersSchema, body: UpdateTemplateSchema,
      response: { 200: ok(ProcessTemplate, 'The updated template with its steps', ['ETag']), ...problems(400, 401, 403, 404, 412, 422) }
    }
  }, async (request, reply) => {
    const expected = expectedVersions(request.headers['if-match'])
    return withETag(reply, await templates.updateTemplate(db, clock, tenantOf(request), request.params.id, request.body, expected))
  })

  app.delete('/process-templates/:id', {
    schema: {
      operationId: 'deleteProcessTemplate', tags, summary: 'Delete a process template no process was started from', params: IdParamsSchema,
      headers: IfMatchHeadersSchema, response: { 204: noContent('The template and its steps are deleted'), ...problems(400, 401, 403, 404, 409, 412) }
    }
  }, async (request, reply) => {
    await templates.deleteTemplate(db, tenantOf(request), request.params.id, expectedVersions(request.headers['if-match']))
    return reply.code(204).send(null)
  })

  app.post('/process-templates/:id/copy', {
    schema: {
      operationId: 'copyProcessTemplate', tags, summary: 'Copy a process template with all its steps (the copy is inactive)',
      description: 'If-Match names the version of the template to copy: the copy is of the template the client saw.',
      params: IdParamsSchema, headers: TemplateIfMatchHeadersSchema, body: CopyTemplateSchema,
      response: { 201: ok(ProcessTemplate, 'The copy, inactive, with copies of the steps', ['ETag', 'Location']), ...problems(400, 401, 403, 404, 412, 422) }
    }
  }, async (request, reply) => {
    const expected = expectedVersions(request.headers['if-match'])
    const copy = await templates.copyTemplate(db, clock, tenantOf(request), request.params.id, request.body, expected)
    void reply.header('location', `${app.prefix}/process-templates/${copy.id}`)
    return reply.code(201).send(withETag(reply, copy))
  })
}
