import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import { buildApp, serverOptions } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { openPostgres } from '../../src/db/connect.js'
import { sql } from '../../src/db/kysely.js'
import { hashKey } from '../../src/lib/keys.js'
import { startFaultProxy, type FaultProxy } from '../../scripts/drills/fault-proxy.js'
import { client, type Client } from './app.js'
import { databaseUrl } from './database.js'
import type { RuntimeContext } from './runtime.js'

export interface FaultyApp {
  /** Between the app (and schedulers given `db`) and the runtime's database: cuts, refuses, hangs. */
  proxy: FaultProxy
  /** The runtime's database through the proxy. */
  db: ReturnType<typeof openPostgres>['db']
  app: FastifyInstance
  /** The runtime's tenant, calling the app behind the proxy. */
  api: Client
  /** The operator, calling the app behind the proxy. */
  operator: Client
}

const OPERATOR_KEY = 'faulty-app-operator-key-of-enough-length'

/**
 * A second app on the runtime's database, reached through a fault-injecting TCP proxy (the shared
 * Postgres server is never touched), torn down with the test. `env` adds settings; `user` connects as
 * another role than the tests' own; `logger` receives the app's log (none otherwise).
 */
export async function appBehindFaultProxy(
  t: Test, rt: RuntimeContext,
  options: { poolMax: number; statementTimeoutMs: number; env?: Record<string, string>; user?: string; logger?: FastifyBaseLogger }
): Promise<FaultyApp> {
  const { rows } = await sql<{ name: string }>`select current_database() as name`.execute(rt.db)
  const url = withUser(databaseUrl(rows[0]!.name), options.user)
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(url).port || 5432) })
  const faulty = openPostgres(proxy.url(url), { poolMax: options.poolMax, statementTimeoutMs: options.statementTimeoutMs, connectTimeoutMs: 1000 })
  const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', ...options.env })
  const app = await buildApp({ config, db: faulty.db, operatorKeyHash: hashKey(OPERATOR_KEY), clock: rt.clock }, serverOptions(config, options.logger ?? false))
  t.teardown(async () => {
    await app.close()
    await faulty.close()
    await proxy.close()
  })
  return { proxy, db: faulty.db, app, api: client(app, rt.tenant.key), operator: client(app, OPERATOR_KEY) }
}

function withUser(url: string, user: string | undefined): string {
  if (user === undefined) return url
  const parsed = new URL(url)
  parsed.username = user
  parsed.password = ''
  return parsed.toString()
}
