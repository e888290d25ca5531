import type { FastifyInstance } from 'fastify'
import { Type } from 'typebox'
import type { ModuleOptions } from '../module-options.js'
import { UNAVAILABLE_RETRY_AFTER_S } from '../../db/errors.js'
import { METRICS_CONTENT_TYPE, type BatonMetrics } from '../../lib/metrics.js'
import { sendProblem } from '../../plugins/problems.js'
import { ok, problems } from '../../schemas/common.js'
import { scrapeMetrics } from './metrics.js'
import { readinessCheck } from './readiness.js'

const HealthSchema = Type.Object({ status: Type.Literal('ok') }, { $id: 'Health' })

export interface HealthOptions extends ModuleOptions {
  /** This process's metrics registry, which the scheduler beside the API (npm start) counts into too. */
  metrics: BatonMetrics
  /** True once the process began to stop: /health/ready then answers 503. */
  stopping?: () => boolean
}

export default async function healthRoutes(app: FastifyInstance, { db, clock, metrics, stopping }: HealthOptions): Promise<void> {
  app.addSchema(HealthSchema)
  const unready = readinessCheck(db, stopping)

  app.get('/health/live', {
    config: { auth: 'public', shedLoad: false, rateLimited: false },
    schema: {
      operationId: 'getLiveness', tags: ['health'], summary: 'The process is up', security: [],
      response: { 200: ok(Type.Ref('Health'), 'The process is up') }
    }
  }, async () => ({ status: 'ok' as const }))

  app.get('/health/ready', {
    config: { auth: 'public', rateLimited: false },
    schema: {
      operationId: 'getReadiness',
      tags: ['health'],
      summary: 'The database is reachable and fully migrated',
      security: [],
      response: { 200: ok(Type.Ref('Health'), 'Ready to serve'), ...problems(503) }
    }
  }, async (request, reply) => {
    const why = await unready()
    if (!why) return { status: 'ok' as const }
    if (why.error) request.log.warn({ err: why.error }, 'readiness check failed')
    const body = { type: 'about:blank', title: 'Service Unavailable', status: 503, detail: why.detail, instance: '/health/ready' }
    return sendProblem(reply, body, { 'retry-after': String(UNAVAILABLE_RETRY_AFTER_S) })
  })

  app.get('/metrics', {
    config: { auth: 'operator' },
    schema: {
      operationId: 'getMetrics',
      tags: ['health'],
      summary: 'Queue sizes, scheduler counters and process figures in the Prometheus text format (operator key)',
      response: {
        200: { description: 'Prometheus text exposition format 0.0.4', content: { 'text/plain': { schema: Type.String() } } },
        ...problems(401, 403)
      }
    }
  }, async (_request, reply) => {
    return reply.type(METRICS_CONTENT_TYPE).send(await scrapeMetrics(db, metrics, clock.now()))
  })
}
