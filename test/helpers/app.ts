import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import type { Test } from 'tap'
import { buildApp, serverOptions } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import type { DB } from '../../src/db/connect.js'
import { generateKey, hashKey } from '../../src/lib/keys.js'
import { BatonMetrics } from '../../src/lib/metrics.js'
import { TestClock } from './clock.js'
import { createTestDatabase, databaseUrl } from './database.js'

export interface Client {
  get(url: string, headers?: Record<string, string>): Promise<Response>
  post(url: string, body?: unknown, headers?: Record<string, string>): Promise<Response>
  put(url: string, body?: unknown, headers?: Record<string, string>): Promise<Response>
  patch(url: string, body?: unknown, headers?: Record<string, string>): Promise<Response>
  delete(url: string, headers?: Record<string, string>): Promise<Response>
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests read JSON bodies freely
export type Response = LightMyRequestResponse & { body: string; data: any }

export interface TestContext {
  app: FastifyInstance
  db: DB
  /** The app's database, for a test that needs connections of its own. */
  databaseUrl: string
  clock: TestClock
  /** The app's metrics, which the runtime's schedulers count into as well (as in `npm start`). */
  metrics: BatonMetrics
  /** The operator key, for tests that build their own requests. */
  operatorKey: string
  operator: Client
  anonymous: Client
  as(key: string): Client
  /** A tenant with a fresh API key and a client that uses it. */
  newTenant(overrides?: Partial<{ name: string; webId: string; timeZone: string }>): Promise<TenantFixture>
}

export interface TenantFixture {
  id: string
  webId: string
  key: string
  client: Client
}

let tenantCounter = 0

/**
 * Boots the real app on a database of its own, torn down with the test; `env` adds settings (its
 * DATABASE_STATEMENT_TIMEOUT_MS that of the database's pool too). Load
 * shedding is off unless `env` turns it on (test/plugins/load-shedding.test.ts): on a busy machine
 * a test's request must not be refused because the machine, not the app, is slow. `databaseSettings` are the
 * database's own (createTestDatabase).
 */
export async function setupApp(t: Test, env: Record<string, string> = {}, databaseSettings: Record<string, string> = {}, databaseMade?: string): Promise<TestContext> {
  const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0', ...env })
  // The pool keeps its default statement timeout unless `env` sets one, as `npm start` would.
  const database = await createTestDatabase(env.DATABASE_STATEMENT_TIMEOUT_MS === undefined ? {} : { statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS }, databaseSettings, databaseMade)
  const operatorKey = generateKey('operator')
  const clock = new TestClock()
  const metrics = new BatonMetrics()
  const app = await buildApp(
    { config, db: database.db, operatorKeyHash: hashKey(operatorKey), clock, metrics },
    serverOptions(config, false)
  )
  await app.ready()
  t.teardown(async () => {
    await app.close()
    await database.drop()
  })

  const as = (key?: string): Client => client(app, key)
  const operator = as(operatorKey)
  return {
    app,
    db: database.db,
    databaseUrl: databaseUrl(database.name),
    clock,
    metrics,
    operatorKey,
    operator,
    anonymous: as(),
    as,
    async newTenant(overrides = {}) {
      tenantCounter += 1
      const webId = overrides.webId ?? `web${process.pid}x${tenantCounter}`
      const tenant = await operator.post('/v1/tenants', { name: `Tenant ${tenantCounter}`, webId, ...overrides })
      if (tenant.statusCode !== 201) throw new Error(`tenant not created: ${tenant.body}`)
      const key = await operator.post(`/v1/tenants/${tenant.data.id}/api-keys`, { name: 'test' })
      return { id: tenant.data.id, webId, key: key.data.key, client: as(key.data.key) }
    }
  }
}

export function client(app: FastifyInstance, key?: string): Client {
  const send = async (method: InjectOptions['method'], url: string, body?: unknown, headers: Record<string, string> = {}) => {
    const response = await app.inject({
      method,
      url,
      headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
      ...(body === undefined ? {} : { payload: body as InjectOptions['payload'] })
    })
    const contentType = String(response.headers['content-type'] ?? '')
    const data = contentType.includes('json') && response.body ? JSON.parse(response.body) : undefined
    return Object.assign(response, { data }) as Response
  }
  return {
    get: (url, headers) => send('GET', url, undefined, headers),
    post: (url, body, headers) => send('POST', url, body, headers),
    put: (url, body, headers) => send('PUT', url, body, headers),
    patch: (url, body, headers) => send('PATCH', url, body, headers),
    delete: (url, headers) => send('DELETE', url, undefined, headers)
  }
}
