import type { FastifyInstance } from 'fastify'
import { Type } from 'typebox'
import type { Kysely } from 'kysely'
import type { ModuleOptions } from '../../app.js'
import { UNAVAILABLE_RETRY_AFTER_S } from '../../db/errors.js'
import { pendingMigrations } from '../../db/migrate.js'
import { sendProblem } from '../../plugins/problems.js'
import { ok, problems } from '../../schemas/common.js'
import { METRICS_CONTENT_TYPE, renderMetrics } from './metrics.js'
import { pingDatabase, queueFigures } from './repository.js'

const HealthSchema = Type.Object({ status: Type.Literal('ok') }, { $id: 'Health' })

export default async function healthRoutes(app: FastifyInstance, { db, clock }: ModuleOptions): Promise<void> {
  app.addSchema(HealthSchema)
  let migrated = false

  app.get('/health/live', {
    config: { auth: 'public', shedLoad: false },
    schema: {
      operationId: 'getLiveness', tags: ['health'], summary: 'The process is up', security: [],
      response: { 200: ok(Type.Ref('Health'), 'The process is up') }
    }
  }, async () => ({ status: 'ok' as const }))

  app.get('/health/ready', {
    config: { auth: 'public' },
    schema: {
      operationId: 'getReadiness',
      tags: ['health'],
      summary: 'The database is reachable and fully migrated',
      security: [],
      response: { 200: ok(Type.Ref('Health'), 'Ready to serve'), ...problems(503) }
    }
  }, async (request, reply) => {
    try {
      await withinMs(READY_CHECK_MS, async () => {
        await pingDatabase(db)
        migrated ||= (await pendingMigrations(db as unknown as Kysely<unknown>)).length === 0
      })
    } catch (error) {
      request.log.warn({ err: error }, 'readiness check failed')
      return sendProblem(reply, unready('The database is not reachable.'), RETRY)
    }
    if (!migrated) return sendProblem(reply, unready('Database migrations are pending.'), RETRY)
    return { status: 'ok' as const }
  })

  app.get('/metrics', {
    config: { auth: 'operator' },
    schema: {
      operationId: 'getMetrics',
      tags: ['health'],
      summary: 'Queue sizes and process figures in the Prometheus text format (operator key)',
      response: {
        200: { description: 'Prometheus text exposition format 0.0.4', content: { 'text/plain': { schema: Type.String() } } },
        ...problems(401, 403)
      }
    }
  }, async (_request, reply) => {
    const now = clock.now()
    const text = renderMetrics(await queueFigures(db, now), now, { rssBytes: process.memoryUsage.rss(), uptimeSeconds: Math.round(process.uptime()) })
    return reply.type(METRICS_CONTENT_TYPE).send(text)
  })
}

const RETRY = { 'retry-after': String(UNAVAILABLE_RETRY_AFTER_S) }

// A probe must answer in time even when the database hangs instead of refusing.
const READY_CHECK_MS = 2000

async function withinMs(ms: number, check: () => Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)
  })
  try {
    await Promise.race([check(), late])
  } finally {
    clearTimeout(timer)
  }
}

function unready(detail: string) {
  return { type: 'about:blank', title: 'Service Unavailable', status: 503, detail, instance: '/health/ready' }
}
