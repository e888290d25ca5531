import type { FastifyInstance } from 'fastify'
import { Type } from 'typebox'
import type { Kysely } from 'kysely'
import type { DB } from '../../db/connect.js'
import { pendingMigrations } from '../../db/migrate.js'
import { sendProblem } from '../../plugins/problems.js'
import { problems } from '../../schemas/common.js'
import { pingDatabase } from './repository.js'

const HealthSchema = Type.Object({ status: Type.Literal('ok') }, { $id: 'Health' })

export default async function healthRoutes(app: FastifyInstance, { db }: { db: DB }): Promise<void> {
  app.addSchema(HealthSchema)
  let migrated = false

  app.get('/health/live', {
    config: { auth: 'public' },
    schema: { tags: ['health'], summary: 'The process is up', security: [], response: { 200: Type.Ref('Health') } }
  }, async () => ({ status: 'ok' as const }))

  app.get('/health/ready', {
    config: { auth: 'public' },
    schema: {
      tags: ['health'],
      summary: 'The database is reachable and fully migrated',
      security: [],
      response: { 200: Type.Ref('Health'), ...problems(503) }
    }
  }, async (request, reply) => {
    try {
      await pingDatabase(db)
      migrated ||= (await pendingMigrations(db as unknown as Kysely<unknown>)).length === 0
    } catch (error) {
      request.log.warn({ err: error }, 'readiness check failed')
      return sendProblem(reply, unready('The database is not reachable.'))
    }
    if (!migrated) return sendProblem(reply, unready('Database migrations are pending.'))
    return { status: 'ok' as const }
  })
}

function unready(detail: string) {
  return { type: 'about:blank', title: 'Service Unavailable', status: 503, detail, instance: '/health/ready' }
}
