import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'

/** A read of the API: a client's own cache may keep it, revalidating it (If-None-Match) before each use. */
export const API_READ = 'private, no-cache'
/** A write's answer (an API key or a webhook secret shown once among them), a probe or metrics: kept by no cache. */
export const NOT_STORED = 'no-store'

/**
 * Cache-Control for what the API answers (RFC 9111 5.2.2). A `/v1` read carries one tenant's data: `private`
 * keeps it out of shared caches (a proxy, a CDN) even where one would store an answer to a request with
 * Authorization, and `no-cache` has a client's cache revalidate it, which costs a 304 when it carries an ETag.
 * A write's answer is stored nowhere. `/health/*` and `/metrics` are state of the moment: `no-store`. The
 * explorer (`/docs`, `/openapi.json`) and unknown routes keep what they send. A route that sets its own keeps it.
 */
function cacheControl(request: FastifyRequest, reply: FastifyReply, payload: unknown, done: (err: null, payload: unknown) => void): void {
  const policy = policyOf(request)
  if (policy !== undefined && !reply.hasHeader('cache-control')) void reply.header('cache-control', policy)
  done(null, payload)
}

function policyOf(request: FastifyRequest): string | undefined {
  if (request.is404) return undefined
  const url = request.routeOptions.url ?? ''
  if (url.startsWith('/v1/')) return request.method === 'GET' || request.method === 'HEAD' ? API_READ : NOT_STORED
  if (url.startsWith('/health/') || url === '/metrics') return NOT_STORED
  return undefined
}

async function cacheControlPlugin(app: FastifyInstance): Promise<void> {
  app.addHook('onSend', cacheControl)
}

export default fp(cacheControlPlugin, { name: 'cache-control' })
