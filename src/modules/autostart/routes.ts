import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ModuleOptions } from '../module-options.js'
import { pageRequest } from '../../lib/pagination.js'
import { tenantOf } from '../../plugins/auth.js'
import { IdParamsSchema, ok, Page, problems } from '../../schemas/common.js'
import { AutostartRunSchema, ListAutostartRunsQuerySchema } from './schemas.js'
import { listAutostartRuns } from './service.js'

export default async function autostartRoutes(fastify: FastifyInstance, { db }: ModuleOptions): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addSchema(AutostartRunSchema)
  app.get('/process-templates/:id/autostart-runs', {
    schema: {
      operationId: 'listAutostartRuns', tags: ['templates'], summary: 'List the runs of a template\'s autostart, newest first: what started and what was skipped, and why',
      params: IdParamsSchema, querystring: ListAutostartRunsQuerySchema,
      response: { 200: ok(Page(Type.Ref('AutostartRun')), 'A page of autostart runs'), ...problems(400, 401, 403, 404) }
    }
  }, async (request) => listAutostartRuns(db, tenantOf(request), request.params.id, pageRequest(request), request.query))
}
