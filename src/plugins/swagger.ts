import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyError, FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { FieldErrorSchema, problems, ProblemSchema } from '../schemas/common.js'
import { VERSION } from '../version.js'
import { bodyMayBeLeftOut } from './json-body.js'
import { OPTIONAL_BODY, tidyDocument } from './openapi-document.js'

const TAGS = [
  { name: 'health', description: 'Liveness and readiness' },
  { name: 'tenants', description: 'Operator: tenants and their API keys' },
  { name: 'users', description: 'People of a tenant' },
  { name: 'properties', description: 'Real-estate records' },
  { name: 'addresses', description: 'Contact records' },
  { name: 'marketplace', description: 'The marketplace catalogue: services, parameters, triggers, activation' },
  { name: 'templates', description: 'Process templates and their steps' },
  { name: 'process instances', description: 'Running processes: start, advance, cancel, retry a failed webhook step' },
  { name: 'deliveries', description: 'Webhook deliveries and the log of their attempts' }
]

async function swaggerPlugin(app: FastifyInstance): Promise<void> {
  app.addSchema(FieldErrorSchema)
  app.addSchema(ProblemSchema)
  // Every route but the probes may answer 429 (rate limits, plugins/rate-limit.ts, which do not count the probes) and
  // all but the liveness probe 503 (load shedding, a database away): declared here once, for the routes registered
  // after this plugin.
  app.addHook('onRoute', (route) => {
    if (!route.schema || route.schema.hide === true) return
    const limited = route.config?.rateLimited === false ? [] : [429]
    const anyRoute = problems(...limited, ...(route.config?.shedLoad === false ? [] : [503]))
    // A route that takes a body may refuse one nested too deep (src/plugins/json-body.ts).
    const bodyRoute = route.schema.body === undefined ? {} : problems(422)
    route.schema = { ...route.schema, response: { ...anyRoute, ...bodyRoute, ...(route.schema.response as object | undefined) } }
  })
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Baton',
        version: VERSION,
        description: 'Runs real-estate CRM processes and calls marketplace webhooks. Errors are application/problem+json. ' +
          'Besides the answers each operation lists, any of them may answer 406 (an Accept header that excludes JSON), ' +
          '408 (a request not sent in full within the server\'s request timeout), 413 (a body over the size limit), ' +
          '414 (a URL or path segment too long), 415 (a body not sent as application/json, or sent compressed) or 431 (headers over 16 KiB).'
      },
      tags: TAGS,
      components: {
        securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', description: 'Operator key or tenant API key' } }
      },
      security: [{ bearerAuth: [] }]
    },
    // A body that may be left out (src/plugins/json-body.ts) is marked for tidyDocument, which declares it not required.
    transform: ({ schema, url }) => ({ schema: markOptionalBody(schema), url }),
    transformObject: (built) => ('openapiObject' in built ? tidyDocument(built.openapiObject) : built.swaggerObject),
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`)
    }
  })
  await app.register(async (docs) => {
    docs.addHook('onRoute', (route) => {
      route.config = { ...route.config, auth: 'public' }
    })
    // @fastify/send refuses a file name it will not look up (a NUL, a ".." after a backslash, a name too long)
    // with a bare 400 or 403: no such file is there, so the explorer answers the 404 it gives any other
    // missing file. Every other error goes on to the app's handler (a handler that throws hands it to its parent's).
    docs.setErrorHandler((error: FastifyError & { status?: number }, request, reply) => {
      const status = error.statusCode ?? error.status
      if (request.routeOptions.url?.startsWith('/docs/static/') && (status === 400 || status === 403)) return reply.callNotFound()
      throw error
    })
    await docs.register(swaggerUi, { routePrefix: '/docs', uiConfig: { docExpansion: 'list', deepLinking: true } })
  })
  app.get('/openapi.json', { schema: { hide: true }, config: { auth: 'public' } }, async () => app.swagger())
}

/** The route's schema as the document sees it: a body that may be left out carries OPTIONAL_BODY. */
function markOptionalBody<S extends { body?: unknown }>(schema: S): S {
  return bodyMayBeLeftOut(schema?.body) ? { ...schema, body: { ...schema.body as object, [OPTIONAL_BODY]: true } } : schema
}

export default fp(swaggerPlugin, { name: 'swagger' })
