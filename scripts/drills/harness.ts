// What every drill needs: a database of its own on the real Postgres, Baton processes started as an
// operator starts them (`src/server.ts --role=…`), a provider and an SMTP server on loopback, a
// tenant with a template, and a report of counts that says which promise broke.
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from '../../src/db/kysely.js'
import { openPostgres, type DatabaseHandle } from '../../src/db/connect.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { ADMIN_URL, adminQuery, databaseUrl } from '../../test/helpers/database.js'
import { runScript, type RunningProcess } from '../../test/helpers/process.js'
import { TestProvider } from '../../test/helpers/provider.js'

const OPERATOR_KEY = `drill-operator-${randomBytes(12).toString('hex')}`

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export interface DrillDatabase {
  name: string
  url: string
  handle: DatabaseHandle
  drop(): Promise<void>
}

/** A fresh, migrated database on the Postgres server the tests use (TEST_DATABASE_URL). */
export async function createDrillDatabase(): Promise<DrillDatabase> {
  const name = `baton_drill_${randomBytes(4).toString('hex')}`
  await adminQuery(`create database ${name}`)
  const url = databaseUrl(name)
  const handle = openPostgres(url, { poolMax: 4 })
  await migrateToLatest(handle)
  return {
    name,
    url,
    handle,
    async drop() {
      await handle.close()
      await adminQuery(`drop database if exists ${name} with (force)`)
    }
  }
}

export function postgresTarget(): { host: string; port: number } {
  const url = new URL(ADMIN_URL)
  return { host: url.hostname, port: Number(url.port || 5432) }
}

/** A port free on 127.0.0.1 now (the benchmarks' own). */
export { freePort } from '../bench/lib.js'

export interface Baton {
  name: string
  process: RunningProcess
  /** When the process was started, by this machine's clock. */
  spawnedAt: number
  exited: boolean
}

/** Baton processes of one drill, sharing one database and settings; all are killed at the end. */
export class Cluster {
  readonly all: Baton[] = []
  private dataDir = ''

  constructor(private readonly env: Record<string, string>) {}

  async init(): Promise<void> {
    this.dataDir = await mkdtemp(join(tmpdir(), 'baton-drill-'))
  }

  /** The API alone (`--role=api`) on the given port; resolves once /health/ready answers 200. */
  async api(port: number, env: Record<string, string> = {}): Promise<Baton> {
    const baton = this.spawn('api', ['--role=api'], { PORT: String(port), ...env })
    const deadline = Date.now() + 90_000
    for (;;) {
      const status = await fetch(`http://127.0.0.1:${port}/health/ready`).then((r) => r.status, () => 0)
      if (status === 200) return baton
      if (baton.exited || Date.now() > deadline) throw new Error(`the API did not become ready:\n${baton.process.output()}`)
      await sleep(100)
    }
  }

  /** A worker (`--role=worker`), its connections named after it (PGAPPNAME); resolves once it has started its scheduler. */
  async worker(name: string, env: Record<string, string> = {}): Promise<Baton> {
    const baton = this.spawn(name, ['--role=worker'], { BATON_WORKER_ID: name, PGAPPNAME: name, LOG_LEVEL: 'info', ...env })
    await baton.process.waitFor(/Baton worker started/, 90_000)
    return baton
  }

  spawn(name: string, args: string[], env: Record<string, string>): Baton {
    // A drill is one client starting processes at a rate well past the per-key limit; the limiter has its
    // own tests, so it is off here.
    const process = runScript('src/server.ts', { RATE_LIMIT_MAX: '0', ...this.env, BATON_DATA_DIR: this.dataDir, ...env }, args)
    const baton: Baton = { name, process, spawnedAt: Date.now(), exited: false }
    void process.exited.then(() => { baton.exited = true })
    this.all.push(baton)
    return baton
  }

  /** Processes that ended although the drill did not stop them. */
  unexpectedExits(stopped: Set<Baton>): Baton[] {
    return this.all.filter((b) => b.exited && !stopped.has(b))
  }

  logs(): string {
    return this.all.map((b) => `--- ${b.name} (exit ${b.process.child.exitCode ?? b.process.child.signalCode ?? 'running'}) ---\n${b.process.output()}`).join('\n')
  }

  async close(): Promise<void> {
    for (const baton of this.all) if (!baton.exited) baton.process.child.kill('SIGKILL')
    await Promise.all(this.all.map((b) => b.process.exited))
    await rm(this.dataDir, { recursive: true, force: true })
  }
}

/** The settings every drill's Baton processes share; drills add their own. */
export function batonEnv(databaseUrl: string): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl,
    BATON_ADMIN_TOKEN: OPERATOR_KEY,
    BATON_CLAIM_SECRET: randomBytes(24).toString('hex'),
    NODE_ENV: 'production',
    LOG_LEVEL: 'warn',
    SMTP_URL: '',
    WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true',
    // Several workers run at once: each listens for probes on a free port of its own.
    WORKER_HTTP_PORT: '0'
  }
}

export interface Tenant {
  key: string
  userId: string
  serviceId: string
  /** Another marketplace service, activated for the tenant, whose webhook is this provider: its id. */
  service(provider: TestProvider): Promise<string>
  /** Creates an active template with these steps (webhook steps call the drill's provider). */
  template(steps: Record<string, unknown>[]): Promise<string>
  /** Starts a process; resolves with the HTTP status and the instance id when it answered 201. */
  start(templateId: string): Promise<{ status: number; id?: string }>
}

/** A tenant with a user and an activated service whose webhook is the drill's provider. */
export async function setupTenant(apiUrl: string, provider: TestProvider): Promise<Tenant> {
  const call = async (key: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const response = await fetch(`${apiUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
    const text = await response.text()
    return { status: response.status, data: text ? JSON.parse(text) : undefined }
  }
  const must = async (...args: Parameters<typeof call>) => {
    const answer = await call(...args)
    if (answer.status >= 300) throw new Error(`${args[1]} ${args[2]} answered ${answer.status}: ${JSON.stringify(answer.data)}`)
    return answer.data
  }
  const tenant = await must(OPERATOR_KEY, 'POST', '/v1/tenants', { name: 'Drill Immobilien', webId: `drill${randomBytes(3).toString('hex')}` })
  const { key } = await must(OPERATOR_KEY, 'POST', `/v1/tenants/${tenant.id}/api-keys`, { name: 'drill' })
  const addService = async (provider: TestProvider): Promise<string> => {
    const service = await must(OPERATOR_KEY, 'POST', '/v1/marketplace-services', { name: 'Drill', provider: 'DrillCo', webhookUrl: `${provider.url}/hook` })
    provider.secret = service.secret
    await must(key, 'PUT', `/v1/marketplace-services/${service.id}/activation`)
    return service.id
  }
  const serviceId = await addService(provider)
  const user = await must(key, 'POST', '/v1/users', { name: 'Dora Drill', email: 'controller@example.com' })
  return {
    key,
    userId: user.id,
    serviceId,
    service: addService,
    async template(steps) {
      const created = await must(key, 'POST', '/v1/process-templates', { name: 'Drill process', controllerUserId: user.id })
      for (const step of steps) {
        await must(key, 'POST', `/v1/process-templates/${created.id}/steps`, {
          start: { mode: 'afterPrevious' }, responsibility: 'processResponsible', ...(step.kind === 'webhook' ? { serviceId } : {}), ...step
        })
      }
      const current = await must(key, 'GET', `/v1/process-templates/${created.id}`)
      await must(key, 'PATCH', `/v1/process-templates/${created.id}`, { active: true }, { 'if-match': `"${current.version}"` })
      return created.id
    },
    async start(templateId) {
      try {
        const answer = await call(key, 'POST', '/v1/process-instances', { templateId, responsibleUserId: user.id })
        return { status: answer.status, ...(answer.status === 201 ? { id: answer.data.id as string } : {}) }
      } catch {
        return { status: 0 }
      }
    }
  }
}

/** Polls until the check holds or the time is up; returns whether it held. */
export async function waitFor(check: () => Promise<boolean>, timeoutMs: number, everyMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return true
    if (Date.now() > deadline) return false
    await sleep(everyMs)
  }
}

export async function deliveryStatuses(db: DatabaseHandle['db']): Promise<Record<string, number>> {
  const { rows } = await sql<{ status: string; n: number }>`select status, count(*)::int as n from deliveries group by status`.execute(db)
  return Object.fromEntries(rows.map((r) => [r.status, r.n]))
}

/** Each delivery's calls as the provider saw them, and its attempts as Baton logged them. */
export async function callsAndAttempts(db: DatabaseHandle['db'], provider: TestProvider): Promise<Map<string, { calls: number; attempts: string[] }>> {
  const byDelivery = new Map<string, { calls: number; attempts: string[] }>()
  const entry = (id: string) => {
    let found = byDelivery.get(id)
    if (!found) byDelivery.set(id, (found = { calls: 0, attempts: [] }))
    return found
  }
  for (const call of provider.calls) if (call.query.deliveryId) entry(call.query.deliveryId).calls += 1
  const { rows } = await sql<{ delivery_id: string; outcome: string }>`
    select delivery_id, outcome from delivery_attempts order by delivery_id, attempt_number
  `.execute(db)
  for (const row of rows) entry(row.delivery_id).attempts.push(row.outcome)
  return byDelivery
}

export interface Count {
  name: string
  value: number | string
  /** What the drill promises of it, e.g. "= 0"; a broken promise fails the drill. */
  promise?: string
  kept?: boolean
}

/** Prints the drill's counts, Jepsen-style, and returns whether every promise was kept. */
export function report(title: string, counts: Count[]): boolean {
  const width = Math.max(...counts.map((c) => c.name.length)) + 2
  const lines = counts.map((c) => {
    const verdict = c.promise === undefined ? '' : `${`promise ${c.promise}`.padEnd(26)}${c.kept ? 'ok' : 'BROKEN'}`
    return `  ${c.name.padEnd(width)}${String(c.value).padStart(10)}   ${verdict}`.trimEnd()
  })
  const kept = counts.every((c) => c.promise === undefined || c.kept)
  process.stdout.write(`\n${title}\n${lines.join('\n')}\n  => ${kept ? 'every promise kept' : 'A PROMISE WAS BROKEN'}\n`)
  return kept
}

/** A count with a promise: `value` must be at most `limit` (or equal, for "= 0"). */
export function atMost(name: string, value: number, limit: number, unit = ''): Count {
  return { name, value: `${value}${unit}`, promise: limit === 0 ? '= 0' : `<= ${limit}${unit}`, kept: value <= limit }
}

export function info(name: string, value: number | string): Count {
  return { name, value }
}
