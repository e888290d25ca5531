import type { FastifyInstance, FastifyReply, FastifyRequest, onSendHookHandler } from 'fastify'
import fp from 'fastify-plugin'

/** A read of the API: a client's own cache may keep it, revalidating it (If-None-Match) before each use. */
const API_READ = 'private, no-cache'
/** A write's answer (an API key or a webhook secret shown once among them), a probe or metrics: kept by no cache. */
const NOT_STORED = 'no-store'

/**
 * Cache-Control for what the API's routes answer (RFC 9111 5.2.2). A `/v1` read carries one tenant's data:
 * `private` keeps it out of shared caches (a proxy, a CDN) even where one would store an answer to a request
 * with Authorization, and `no-cache` has a client's cache revalidate it, which costs a 304 when it carries an
 * ETag. A write's answer is stored nowhere. `/health/*` and `/metrics` are state of the moment: `no-store`.
 * The explorer (`/docs`, `/openapi.json`) and unknown routes keep what they send. A route that sets its own
 * keeps it. The policy is worked out once per route, as it is registered (routes registered after this plugin).
 */
function policyOf(url: string, method: string): string | undefined {
  if (url.startsWith('/v1/')) return method === 'GET' || method === 'HEAD' ? API_READ : NOT_STORED
  if (url.startsWith('/health/') || url === '/metrics') return NOT_STORED
  return undefined
}

function sending(policy: string): onSendHookHandler {
  return function cacheControl(_request: FastifyRequest, reply: FastifyReply, payload: unknown, done: (err: null, payload: unknown) => void): void {
    if (!reply.hasHeader('cache-control')) void reply.header('cache-control', policy)
    done(null, payload)
  } as onSendHookHandler
}

async function cacheControlPlugin(app: FastifyInstance): Promise<void> {
  const hooks = new Map<string, onSendHookHandler>()
  app.addHook('onRoute', (route) => {
    const methods = [route.method].flat()
    const policy = policyOf(route.url, methods.every((m) => m === 'GET' || m === 'HEAD') ? 'GET' : 'POST')
    if (policy === undefined) return
    const hook = hooks.get(policy) ?? sending(policy)
    hooks.set(policy, hook)
    route.onSend = [route.onSend ?? []].flat().concat(hook)
  })
}

export default fp(cacheControlPlugin, { name: 'cache-control' })
