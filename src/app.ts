import type { Server } from 'node:http'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyHttpOptions, type FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { parseAllowedTargets } from './adapters/address-policy.js'
import { systemClock, type Clock } from './adapters/clock.js'
import type { Config } from './config.js'
import { logOptions } from './log-options.js'
import type { DB } from './db/connect.js'
import { TRIGGERS_NOTIFY, type Wakeups } from './db/wakeups.js'
import { ActivitySchema } from './modules/activities/schemas.js'
import type { ModuleOptions } from './modules/module-options.js'
import addressRoutes from './modules/addresses/routes.js'
import autostartRoutes from './modules/autostart/routes.js'
import activationRoutes from './modules/marketplace/activations/routes.js'
import apiKeyRoutes from './modules/tenants/api-key-routes.js'
import deliveryRoutes from './modules/deliveries/routes.js'
import healthRoutes from './modules/health/routes.js'
import instanceRoutes from './modules/instances/routes.js'
import parameterRoutes from './modules/marketplace/parameters/routes.js'
import propertyRoutes from './modules/properties/routes.js'
import serviceRoutes from './modules/marketplace/services/routes.js'
import stepRoutes from './modules/templates/steps/routes.js'
import templateRoutes from './modules/templates/templates/routes.js'
import tenantRoutes from './modules/tenants/routes.js'
import triggerRoutes from './modules/marketplace/triggers/routes.js'
import userRoutes from './modules/users/routes.js'
import { loadClaimKey } from './modules/auth/claim-key.js'
import { KnownKeys } from './modules/auth/known-keys.js'
import { OperatorKeyHash } from './modules/auth/operator-key-hash.js'
import { findOperatorKeyHash } from './modules/auth/repository.js'
import { BatonMetrics } from './lib/metrics.js'
import { once } from './lib/once.js'
import { createSecretBox } from './lib/secret-box.js'
import auth from './plugins/auth.js'
import cacheControl from './plugins/cache-control.js'
import conditionalGet from './plugins/conditional-get.js'
import draining from './plugins/draining.js'
import jsonBody from './plugins/json-body.js'
import stalledReaders from './plugins/stalled-readers.js'
import loadShedding from './plugins/load-shedding.js'
import problems from './plugins/problems.js'
import protocolErrors, { clientErrorHandler, frameworkErrors } from './plugins/protocol-errors.js'
import queryStrings from './plugins/query-strings.js'
import rateLimit from './plugins/rate-limit.js'
import requestId, { genReqId } from './plugins/request-id.js'
import swagger from './plugins/swagger.js'
import { buildSerializer, buildValidator } from './plugins/validation.js'

export interface AppDependencies {
  config: Config
  db: DB
  operatorKeyHash: string
  /** The key was generated and stored (no BATON_ADMIN_TOKEN): read it again now and then, for a rotation to take effect. */
  operatorKeyStored?: boolean
  clock?: Clock
  /** The apiClaim key; loaded from BATON_CLAIM_SECRET or the database when not given. */
  claimKey?: Buffer
  /** The process's metrics, shared with a scheduler in the same process; a registry of the app's own when not given. */
  metrics?: BatonMetrics
  /** Announces committed work to the schedulers; without it the database's triggers do (src/db/wakeups.ts). */
  wakeups?: Wakeups
  /** True once the process began to stop (server.ts): /health/ready then answers 503 while it drains. */
  stopping?: () => boolean
}


/**
 * One set of server options for production and tests alike. `logger`: the process's logger (server.ts),
 * JSON lines to stdout (true), or none (false).
 */
export function serverOptions(config: Config, logger: FastifyBaseLogger | boolean = true): FastifyHttpOptions<Server> {
  const requestTimeout = config.HTTP_REQUEST_TIMEOUT_MS
  return {
    ...(typeof logger === 'boolean' ? { logger: logger && logOptions(config, false) } : { loggerInstance: logger }),
    // The BATON_TRUST_PROXY proxies in front only (hop 0 the socket's peer, then the entries they appended
    // to X-Forwarded-For, last first): the client is the address the outermost one saw. Trusting every hop
    // (`true`) took the first entry, which the client writes itself, so each request could name a new
    // address. (Fastify refuses a hop count: it trusts none.)
    trustProxy: config.BATON_TRUST_PROXY > 0 ? (_address: string, hop: number) => hop < config.BATON_TRUST_PROXY : false,
    genReqId,
    logController: new LogController({ requestIdLogLabel: 'requestId' }),
    bodyLimit: 1024 * 1024,
    // `/v1/users/` is `/v1/users`, not a user whose id is empty.
    routerOptions: { ignoreTrailingSlash: true },
    schemaController: { compilersFactory: { buildValidator, buildSerializer } },
    // A client that trickles its headers or body is cut off (408); Node checks open requests every second.
    requestTimeout,
    // Node answers an HTTP/1.1 request without Host with an empty 400 of its own: protocol-errors answers it as a problem.
    http: { requestTimeout, headersTimeout: requestTimeout, connectionsCheckingInterval: Math.min(1000, requestTimeout), requireHostHeader: false },
    clientErrorHandler: clientErrorHandler(requestTimeout),
    // A request that reaches an open connection while the server closes is served (with Connection: close),
    // not answered by Fastify's own 503, which is no problem+json: /health/ready says it is stopping.
    return503OnClosing: false,
    frameworkErrors
  }
}

export async function buildApp(deps: AppDependencies, options = serverOptions(deps.config)): Promise<FastifyInstance> {
  const app = Fastify(options).withTypeProvider<TypeBoxTypeProvider>()
  const secrets = createSecretBox(deps.config.BATON_SECRETS_KEY, deps.config.BATON_SECRETS_KEY_PREVIOUS)
  const targets = { allowPrivateNetworks: deps.config.WEBHOOK_ALLOW_PRIVATE_NETWORKS, allowed: parseAllowedTargets(deps.config.WEBHOOK_ALLOWED_TARGETS) }
  const modules: ModuleOptions = { db: deps.db, clock: deps.clock ?? systemClock, secrets, targets, knownKeys: new KnownKeys(), wakeups: deps.wakeups ?? TRIGGERS_NOTIFY }

  await app.register(requestId)
  if (deps.stopping) await app.register(draining, { stopping: deps.stopping })
  await app.register(problems)
  await app.register(protocolErrors)
  await app.register(jsonBody)
  await app.register(stalledReaders, { timeoutMs: deps.config.HTTP_REQUEST_TIMEOUT_MS })
  await app.register(loadShedding, {
    maxEventLoopDelayMs: deps.config.PRESSURE_MAX_EVENT_LOOP_DELAY_MS, maxEventLoopUtilization: deps.config.PRESSURE_MAX_EVENT_LOOP_UTILIZATION
  })
  // Loaded on the first apiClaim, so the app starts (and reports not ready) while the database is away.
  let loadedClaimKey = deps.claimKey
  const claimKey = loadedClaimKey ? () => Promise.resolve(loadedClaimKey!)
    : once(async () => (loadedClaimKey = await loadClaimKey(deps.db, deps.config.BATON_CLAIM_SECRET, secrets)))
  await app.register(rateLimit, {
    max: deps.config.RATE_LIMIT_MAX, windowMs: deps.config.RATE_LIMIT_WINDOW_MS, authFailures: deps.config.AUTH_FAILURE_LIMIT,
    claimKey: () => loadedClaimKey
  })
  await app.register(queryStrings)
  await app.register(swagger)
  await app.register(conditionalGet)
  await app.register(cacheControl)
  // Shared by the activity logs of properties, addresses and process instances.
  app.addSchema(ActivitySchema)
  const operatorKeyHash = new OperatorKeyHash(deps.operatorKeyHash, deps.operatorKeyStored ? () => findOperatorKeyHash(deps.db) : undefined,
    () => modules.clock.now().getTime())
  await app.register(auth, { db: deps.db, operatorKeyHash, claimKey, clock: modules.clock, knownKeys: modules.knownKeys })

  await app.register(healthRoutes, { ...modules, metrics: deps.metrics ?? new BatonMetrics(), ...(deps.stopping ? { stopping: deps.stopping } : {}) })
  await app.register(tenantRoutes, { ...modules, prefix: '/v1' })
  await app.register(apiKeyRoutes, { ...modules, prefix: '/v1' })
  await app.register(userRoutes, { ...modules, prefix: '/v1' })
  await app.register(propertyRoutes, { ...modules, prefix: '/v1' })
  await app.register(addressRoutes, { ...modules, prefix: '/v1' })
  await app.register(serviceRoutes, { ...modules, prefix: '/v1' })
  await app.register(parameterRoutes, { ...modules, prefix: '/v1' })
  await app.register(triggerRoutes, { ...modules, prefix: '/v1' })
  await app.register(activationRoutes, { ...modules, prefix: '/v1' })
  await app.register(templateRoutes, { ...modules, prefix: '/v1' })
  await app.register(stepRoutes, { ...modules, prefix: '/v1' })
  await app.register(autostartRoutes, { ...modules, prefix: '/v1' })
  await app.register(instanceRoutes, { ...modules, prefix: '/v1' })
  await app.register(deliveryRoutes, { ...modules, prefix: '/v1' })

  return app
}
