// Scheduler benchmark (issue 3): one real worker process (`src/server.ts --role=worker`) against a
// fresh Postgres database and a local provider in its own process.
//
//   npm run bench:scheduler                         20,000 due webhook steps at once, then a bare loop
//   npm run bench:scheduler -- --steps 2000         fewer steps
//   npm run bench:scheduler -- --rate 200 --seconds 30
//                                                   steady load: due times spread at 200/s
//   npm run bench:scheduler -- --help
//
// Burst: N process instances whose one webhook step is due now, seeded in one transaction; the
// worker (already running and idle) is woken by the commit. steps/s = N / (commit → last success).
// Bare loop: the same number of GET calls of the same shape, through the same HTTP client
// (src/adapters/http-client.ts) with the same concurrency, against the same provider process.
// Steady: deliveries due at a fixed rate, seeded ahead so they fall due from a few seconds on (or,
// with --live, each inserted when due so the worker hears of it by NOTIFY); lag = when the call
// started (attempt started_at, and arrival at the provider) − when it was due.
// Every phase checks that each delivery succeeded at its first attempt and reached the provider once;
// a problem is printed and the exit code is 1. CPU use comes from /proc (worker, provider, the bench
// database's server processes), peak RSS from the worker's VmHWM.
//
// BENCH_DATABASE_URL names the server (default postgres://postgres@127.0.0.1:5432/postgres); the
// database baton_bench_<pid> is created there and dropped at the end, also after an error.
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createHttpClient, type HttpClient } from '../../src/adapters/http-client.js'
import { openPostgres } from '../../src/db/connect.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { signClaim } from '../../src/lib/api-claims.js'
import { newId } from '../../src/lib/ids.js'
import { buildQueryRequest } from '../../src/scheduler/webhook-request.js'
import {
  CACHE, compile, databaseUrl, log, machineCpu, nodeFlags, procStatus, runNode, SERVER_URL, sleep, spread, stopChild, uuid7, waitFor, type Child, type Spread
} from './lib.js'
import { seedHistory } from './history.js'

const DATABASE = `baton_bench_${process.pid}`
const WORK_CHANNEL = 'baton_work'
const TEMPLATE_NAME = 'Bench: notify the provider'
const STEP_NAME = 'Call the provider'
const STEP_PARAMETERS = { mode: 'full' }
const USER_AGENT = 'Baton/bench'
const TIMEOUT_MS = 10_000
const CLAIM_KEY = randomBytes(32)

// ---- Options -------------------------------------------------------------------------------------

const { values: args } = parseArgs({
  options: {
    steps: { type: 'string' },
    concurrency: { type: 'string', default: '64' },
    rate: { type: 'string' },
    seconds: { type: 'string', default: '30' },
    'lead-ms': { type: 'string', default: '3000' },
    'per-host': { type: 'string' },
    pool: { type: 'string' },
    'poll-ms': { type: 'string' },
    'batch-size': { type: 'string' },
    'timeout-s': { type: 'string', default: '600' },
    keep: { type: 'boolean', default: false },
    live: { type: 'boolean', default: false },
    'delay-ms': { type: 'string', default: '0' },
    compiled: { type: 'boolean', default: false },
    warmup: { type: 'string', default: '500' },
    'count-queries': { type: 'boolean', default: false },
    history: { type: 'string' },
    'node-defaults': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false }
  }
})

if (args.help) {
  process.stdout.write(`Usage: npm run bench:scheduler -- [options]

  --steps N          due webhook steps at once (burst), then a bare loop of N calls (default 20000;
                     0 when --rate is given without --steps)
  --rate R           steady load: R steps due per second ...
  --seconds S        ... for S seconds (default 30)
  --live             steady load inserted as it falls due (notify triggers on), not seeded ahead
  --lead-ms MS       the first steady due time is this far after seeding starts (default 3000)
  --delay-ms MS      the provider answers after MS ms, like one across a network (default 0: at once)
  --concurrency C    SCHEDULER_CONCURRENCY of the worker and concurrency of the bare loop (default 64, as the worker's)
  --per-host P       WEBHOOK_PER_HOST_CONCURRENCY for both (default: C; all calls go to one host)
  --pool N           DATABASE_POOL_MAX of the worker (default: the worker's own default)
  --poll-ms MS       SCHEDULER_POLL_INTERVAL_MS of the worker (default: the worker's own default)
  --batch-size N     SCHEDULER_BATCH_SIZE of the worker (default: the worker's own default)
  --timeout-s S      give up on a phase after S seconds (default 600)
  --warmup N         steps the worker (and a bare loop) run before anything is measured (default 500)
  --compiled         run the worker as production does, compiled (tsc into ${CACHE}) instead
                     of through the tsx loader, whose hooks thread adds to the worker's RSS
  --keep             keep the database ${DATABASE} for inspection
  --history N        before anything, seed N finished processes of another tenant (with their steps,
                     deliveries, attempts, activities) and do not ANALYZE: history must not slow the burst
  --node-defaults    run the worker with node's own heap settings, not the flags npm start passes
                     (package.json), which it gets otherwise
  --count-queries    count the worker's SQL statements per step by kind (scripts/bench/count-queries.ts;
                     loads tsx into the worker even with --compiled)

Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres);
BENCH_WORKER_NODE_ARGS, extra node flags for the worker, after npm start's (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof").
`)
  process.exit(0)
}

function int(name: string, text: string | undefined, min: number): number | undefined {
  if (text === undefined) return undefined
  const value = Number(text)
  if (!Number.isInteger(value) || value < min) throw new Error(`--${name} must be an integer of at least ${min}, not "${text}"`)
  return value
}

const rate = int('rate', args.rate, 1)
const steps = int('steps', args.steps, 0) ?? (rate === undefined ? 20_000 : 0)
const concurrency = int('concurrency', args.concurrency, 1) ?? 64
const seconds = int('seconds', args.seconds, 1) ?? 30
const leadMs = int('lead-ms', args['lead-ms'], 0) ?? 3000
const perHost = int('per-host', args['per-host'], 1) ?? concurrency
const pool = int('pool', args.pool, 1)
const pollMs = int('poll-ms', args['poll-ms'], 10)
const batchSize = int('batch-size', args['batch-size'], 1)
const delayMs = int('delay-ms', args['delay-ms'], 0) ?? 0
const warmup = int('warmup', args.warmup, 0) ?? 500
const phaseTimeoutMs = (int('timeout-s', args['timeout-s'], 1) ?? 600) * 1000

// ---- Small helpers -------------------------------------------------------------------------------

// ---- Child processes -----------------------------------------------------------------------------

// ---- The database --------------------------------------------------------------------------------

interface Fixture {
  tenantId: string
  webId: string
  tenantName: string
  userId: string
  serviceId: string
  secret: string
  webhookUrl: string
}

async function createFixture(db: pg.Client, providerPort: number): Promise<Fixture> {
  const fx: Fixture = {
    // Time-ordered, as Baton makes every id: a history tenant's id (random) then sorts after it, as it
    // does in bench:api, whose tenant the API creates (scripts/bench/history.ts says why that matters).
    tenantId: newId(),
    webId: 'bench-gmbh',
    tenantName: 'Bench GmbH',
    userId: randomUUID(),
    serviceId: randomUUID(),
    secret: randomBytes(32).toString('hex'),
    webhookUrl: `http://127.0.0.1:${providerPort}/hooks/bench?v=1`
  }
  await db.query('insert into tenants (id, name, web_id, time_zone) values ($1, $2, $3, $4)', [fx.tenantId, fx.tenantName, fx.webId, 'Europe/Berlin'])
  await db.query('insert into users (tenant_id, id, name, email) values ($1, $2, $3, $4)', [fx.tenantId, fx.userId, 'Bea Bench', 'bea@example.com'])
  await db.query(`insert into marketplace_services (id, name, provider, webhook_url, delivery, secret, active)
    values ($1, 'Bench service', 'BenchCo', $2, 'query', $3, true)`, [fx.serviceId, fx.webhookUrl, fx.secret])
  await db.query(`insert into service_parameters (service_id, id, name, label, type, allowed_values, required, default_value)
    values ($1, $2, 'mode', 'Mode', 'enum', '["quick","full"]', false, '"full"')`, [fx.serviceId, randomUUID()])
  await db.query('insert into service_activations (tenant_id, service_id) values ($1, $2)', [fx.tenantId, fx.serviceId])
  return fx
}

interface Template {
  id: string
  name: string
}

/** An active template with one webhook step; one per phase, so a phase's rows are found by it. */
async function createTemplate(db: pg.Client, fx: Fixture, label: string): Promise<Template> {
  const template = { id: randomUUID(), name: `${TEMPLATE_NAME} (${label})` }
  await db.query(`insert into process_templates (tenant_id, id, name, active, controller_user_id) values ($1, $2, $3, true, $4)`,
    [fx.tenantId, template.id, template.name, fx.userId])
  await db.query(`insert into template_steps (tenant_id, id, template_id, position, kind, name, start_mode, responsibility, service_id, parameters)
    values ($1, $2, $3, 1, 'webhook', $4, 'afterPrevious', 'processResponsible', $5, $6)`,
  [fx.tenantId, randomUUID(), template.id, STEP_NAME, fx.serviceId, JSON.stringify(STEP_PARAMETERS)])
  return template
}

/**
 * Seeds `count` running one-step instances, each with exactly the rows startInstance + beginStep
 * write (the instance, its step turned due, the processStarted and stepStarted activities and a
 * pending delivery), in one statement. Delivery i is due at firstDue + i × spacingMs (whole ms, as
 * a JS Date would make it). The notify triggers stay quiet (one NOTIFY per row is wasted work for
 * bulk data); one NOTIFY at commit wakes the worker as the real inserts would.
 * With `triggers`, the rows' own triggers notify, as startInstance's inserts do (the live mode).
 * Returns when the commit was sent.
 */
async function seed(db: pg.Client, fx: Fixture, template: Template, count: number, firstDue: Date, spacingMs: number, triggers = false): Promise<number> {
  let quiet = false
  if (!triggers) {
    try {
      await db.query(`set session_replication_role = replica`)
      quiet = true
    } catch {
      log('cannot switch off triggers (not a superuser?): seeding with the notify triggers on')
    }
  }
  try {
    await db.query('begin')
    await db.query(`
      with src as materialized (
        select g,
          date_trunc('milliseconds', $5::timestamptz + (g * $6::float8) * interval '1 millisecond') as due,
          ${uuid7('now()')} as instance_id,
          ${uuid7('now()')} as step_id,
          ${uuid7('now()')} as delivery_id,
          ${uuid7('now()')} as started_activity_id,
          ${uuid7('now()')} as step_activity_id
        from generate_series(0, $4::int - 1) g
      ), instances as (
        insert into process_instances (tenant_id, id, template_id, template_name, status, responsible_user_id,
          controller_user_id, notify_on_completion, property_id, address_id, current_position, idempotency_key,
          version, started_at, created_at, updated_at)
        select $1, instance_id, $2, $7, 'running', $3, $3, false, null, null, 1, null, 1, now(), now(), now() from src
      ), steps as (
        insert into instance_steps (tenant_id, id, instance_id, position, kind, name, start_mode, start_days,
          responsibility, responsible_user_id, deadline_days, refers_to_property, refers_to_address, service_id,
          parameters, state, assignee_user_id, start_at, started_at, version)
        select $1, step_id, instance_id, 1, 'webhook', $8, 'afterPrevious', null, 'processResponsible', null, null,
          false, false, $9, $10::jsonb, 'due', $3, now(), now(), 2 from src
      ), activities as (
        insert into activities (tenant_id, id, kind, message, property_id, address_id, instance_id, step_id, service_id, data, created_at)
        select $1, started_activity_id, 'processStarted', 'Process "' || $7 || '" started.', null::uuid, null::uuid, instance_id, null::uuid, null::uuid,
          jsonb_build_object('responsibleUserId', $3::uuid), now() from src
        union all
        select $1, step_activity_id, 'stepStarted', 'Step "' || $8 || '" started.', null::uuid, null::uuid, instance_id, step_id, $9::uuid,
          jsonb_build_object('assigneeUserId', $3::uuid), now() from src
      )
      insert into deliveries (tenant_id, id, service_id, source, instance_id, step_id, property_id, address_id, parameters, next_attempt_at)
      select $1, delivery_id, $9, 'step', instance_id, step_id, null, null, $10::jsonb, due from src
    `, [fx.tenantId, template.id, fx.userId, count, firstDue, spacingMs, template.name, STEP_NAME, fx.serviceId, JSON.stringify(STEP_PARAMETERS)])
    if (quiet) await db.query(`notify ${WORK_CHANNEL}, 'deliveries'`)
    const committedAt = Date.now()
    await db.query('commit')
    return committedAt
  } catch (error) {
    await db.query('rollback').catch(() => {})
    throw error
  } finally {
    if (quiet) await db.query('reset session_replication_role')
  }
}

/**
 * Whether any delivery is still pending or running: the first entry of each partial index, so the
 * poll every 100 ms costs Postgres next to nothing (a count of 20,000 pending rows took 8 ms each
 * time, some 8 % of a core beside the worker it measures).
 */
async function anyOpen(db: pg.Client): Promise<boolean> {
  const { rows } = await db.query<{ open: boolean }>(`select
    exists (select from deliveries where status = 'pending') or exists (select from deliveries where status = 'running') as open`)
  return rows[0]?.open ?? false
}

/** How many deliveries are still pending or running, for the progress line every 5 s. */
async function openDeliveries(db: pg.Client): Promise<number> {
  const { rows } = await db.query<{ open: number }>(`select
    (select count(*) from deliveries where status = 'pending')::int + (select count(*) from deliveries where status = 'running')::int as open`)
  return rows[0]?.open ?? 0
}

interface DeliveryTimes {
  id: string
  status: string
  due: number
  attempts: number
  started: number
  finished: number
}

async function phaseDeliveries(db: pg.Client, templateId: string): Promise<DeliveryTimes[]> {
  const { rows } = await db.query<{ id: string; status: string; due: Date; attempts: number; started: Date | null; finished: Date | null }>(`
    select d.id, d.status, d.next_attempt_at as due, count(a.id)::int as attempts, min(a.started_at) as started, d.finished_at as finished
    from deliveries d
    join process_instances i on i.tenant_id = d.tenant_id and i.id = d.instance_id
    left join delivery_attempts a on a.tenant_id = d.tenant_id and a.delivery_id = d.id
    where i.template_id = $1
    group by d.tenant_id, d.id`, [templateId])
  return rows.map((r) => ({
    id: r.id, status: r.status, due: r.due.getTime(), attempts: r.attempts,
    started: r.started?.getTime() ?? Number.NaN, finished: r.finished?.getTime() ?? Number.NaN
  }))
}

async function instanceStatuses(db: pg.Client, templateId: string): Promise<Record<string, number>> {
  const { rows } = await db.query<{ status: string; n: number }>(
    'select status, count(*)::int as n from process_instances where template_id = $1 group by status', [templateId])
  return Object.fromEntries(rows.map((r) => [r.status, r.n]))
}

// ---- The provider --------------------------------------------------------------------------------

interface ProviderCalls {
  total: number
  ids: string[]
  times: number[]
}

async function takeCalls(port: number): Promise<ProviderCalls> {
  const response = await fetch(`http://127.0.0.1:${port}/__bench/take`)
  return (await response.json()) as ProviderCalls
}

// ---- The phases ----------------------------------------------------------------------------------

interface Context {
  db: pg.Client
  fx: Fixture
  worker: Child
  providerPort: number
  provider: Child
  /** With --count-queries: the worker's statements since the last call. */
  queries?: () => Promise<QueryCounts>
}

// ---- Statement counts (--count-queries) -----------------------------------------------------------

type QueryCounts = Record<string, { count: number; ms: number }>
const QUERY_MARK = 'BENCH_QUERY_COUNTS '

function queryCounter(worker: Child): () => Promise<QueryCounts> {
  let next = 0
  return async () => {
    const wanted = `${QUERY_MARK}${next++} `
    worker.process.stdin?.write('dump\n')
    const line = await waitFor("the worker's statement counts", 10_000, () => worker.output().split('\n').find((l) => l.startsWith(wanted)))
    return JSON.parse(line.slice(wanted.length)) as QueryCounts
  }
}

function queryRows(counts: QueryCounts, steps: number): [string, string][] {
  const entries = Object.entries(counts)
  const total = entries.reduce((sum, [, t]) => sum + t.count, 0)
  const rows: [string, string][] = [['statements per step', `${(total / steps).toFixed(1)} (${total} in all)`]]
  for (const [kind, tally] of entries.slice(0, 16)) {
    rows.push([`  ${(tally.count / steps).toFixed(2)} × ${(tally.ms / tally.count).toFixed(2)} ms`, kind])
  }
  return rows
}

interface Usage {
  seconds: number
  workerCpu: number
  providerCpu: number
  /** Server processes of the bench database. */
  postgresCpu: number
  /** This process: the client side of the bare loop. */
  benchCpu: number
  machineBusy: number
}

/**
 * CPU milliseconds used so far by each server process serving the worker (its pool, its LISTEN): those
 * of the bench database but the bench's own, whose polls are not the worker's work.
 */
async function backendCpu(ctx: Context): Promise<Map<number, number>> {
  const { rows } = await ctx.db.query<{ pid: number }>('select pid from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [DATABASE])
  return new Map(rows.map((r) => [r.pid, procStatus(r.pid)?.cpuMs ?? 0]))
}

/** Starts measuring CPU use; the returned function reports it since then. */
async function usageMeter(ctx: Context): Promise<() => Promise<Usage>> {
  const started = performance.now()
  const worker = procStatus(ctx.worker.process.pid ?? 0)
  const provider = procStatus(ctx.provider.process.pid ?? 0)
  const backends = await backendCpu(ctx)
  const machine = machineCpu()
  const bench = process.cpuUsage()
  return async () => {
    const seconds = (performance.now() - started) / 1000
    const w = procStatus(ctx.worker.process.pid ?? 0)
    const p = procStatus(ctx.provider.process.pid ?? 0)
    const m = machineCpu()
    // Backends that ended meanwhile are missed (the pool keeps its connections while busy).
    let postgresCpu = 0
    for (const [pid, cpuMs] of await backendCpu(ctx)) postgresCpu += cpuMs - (backends.get(pid) ?? 0)
    return {
      seconds,
      workerCpu: (w?.cpuMs ?? 0) - (worker?.cpuMs ?? 0),
      providerCpu: (p?.cpuMs ?? 0) - (provider?.cpuMs ?? 0),
      postgresCpu,
      benchCpu: (({ user, system }) => (user + system) / 1000)(process.cpuUsage(bench)),
      machineBusy: (m.busy - machine.busy) / Math.max(1, m.total - machine.total)
    }
  }
}

/** Polls the database every 100 ms until no delivery is pending or running; fails early if the worker dies. */
async function drain(ctx: Context, expected: number, label: string): Promise<void> {
  const until = Date.now() + phaseTimeoutMs
  let lastReport = Date.now()
  for (;;) {
    if (ctx.worker.process.exitCode !== null || ctx.worker.process.signalCode !== null) {
      throw new Error(`the worker exited during the ${label} phase; its output:\n${ctx.worker.output()}`)
    }
    if (!(await anyOpen(ctx.db))) return
    if (Date.now() > until) {
      throw new Error(`the ${label} phase did not finish within ${phaseTimeoutMs / 1000} s: ${await openDeliveries(ctx.db)} of ${expected} deliveries still open`)
    }
    if (Date.now() - lastReport > 5000) {
      log(`${label}: ${expected - await openDeliveries(ctx.db)} of ${expected} done`)
      lastReport = Date.now()
    }
    await sleep(100)
  }
}

interface Checked {
  deliveries: DeliveryTimes[]
  calls: ProviderCalls
  /** Milliseconds from due (or from availableAt, if later) to the provider receiving the call, per delivery. */
  arrivalLag: number[]
  problems: string[]
}

/** Reads back a phase and checks it: every delivery succeeded at its first attempt, and the provider saw each once. */
async function collect(ctx: Context, templateId: string, expected: number, availableAt: number): Promise<Checked> {
  const deliveries = await phaseDeliveries(ctx.db, templateId)
  const calls = await takeCalls(ctx.providerPort)
  const problems: string[] = []
  const succeeded = deliveries.filter((d) => d.status === 'succeeded').length
  if (deliveries.length !== expected) problems.push(`${deliveries.length} deliveries seeded, expected ${expected}`)
  if (succeeded !== expected) problems.push(`${succeeded} of ${expected} deliveries succeeded`)
  const retried = deliveries.filter((d) => d.attempts !== 1).length
  if (retried > 0) problems.push(`${retried} deliveries took other than one attempt`)
  const statuses = await instanceStatuses(ctx.db, templateId)
  if ((statuses.completed ?? 0) !== expected) problems.push(`instances by status: ${JSON.stringify(statuses)}`)
  const due = new Map(deliveries.map((d) => [d.id, d.due]))
  const seen = new Set<string>()
  const arrivalLag: number[] = []
  calls.ids.forEach((id, i) => {
    const at = calls.times[i] ?? Number.NaN
    const dueAt = due.get(id)
    if (dueAt === undefined) return
    if (seen.has(id)) return
    seen.add(id)
    arrivalLag.push(at - Math.max(dueAt, availableAt))
  })
  if (calls.ids.length !== expected || seen.size !== expected) {
    problems.push(`the provider received ${calls.ids.length} calls for ${seen.size} of ${expected} deliveries`)
  }
  return { deliveries, calls, arrivalLag, problems }
}

interface BurstResult {
  steps: number
  seedMs: number
  stepsPerSecond: number
  firstCallMs: number
  drainMs: number
  lag: Spread
  arrivalLag: Spread
  usage: Usage
  queries: QueryCounts | undefined
  problems: string[]
}

async function burst(ctx: Context, template: Template, count: number): Promise<BurstResult> {
  log(`burst: seeding ${count} due webhook steps`)
  await ctx.queries?.()
  const meter = await usageMeter(ctx)
  const seedStarted = performance.now()
  const due = new Date()
  const committedAt = await seed(ctx.db, ctx.fx, template, count, due, 0)
  const seedMs = performance.now() - seedStarted
  log(`burst: seeded in ${seedMs.toFixed(0)} ms; draining`)
  await drain(ctx, count, 'burst')
  const usage = await meter()
  const queries = await ctx.queries?.()
  // Work became available when the seeding committed (the due time was set just before seeding).
  const available = Math.max(committedAt, due.getTime())
  const checked = await collect(ctx, template.id, count, available)
  const lastSuccess = Math.max(...checked.deliveries.map((d) => d.finished).filter(Number.isFinite))
  const firstCall = Math.min(...checked.deliveries.map((d) => d.started).filter(Number.isFinite))
  const drainMs = lastSuccess - available
  return {
    steps: count,
    seedMs,
    stepsPerSecond: count / (drainMs / 1000),
    firstCallMs: firstCall - available,
    drainMs,
    lag: spread(checked.deliveries.map((d) => d.started - Math.max(d.due, available))),
    arrivalLag: spread(checked.arrivalLag),
    usage,
    queries,
    problems: checked.problems
  }
}

interface BareResult {
  requests: number
  ms: number
  requestsPerSecond: number
  usage: Usage
  failures: number
}

/** The same GET calls through the same client, `concurrency` at a time, with nothing else around them. */
async function bareLoop(ctx: Context, http: HttpClient, count: number): Promise<BareResult> {
  const meter = await usageMeter(ctx)
  let next = 0
  let failures = 0
  const started = performance.now()
  const lane = async () => {
    while (next < count) {
      next += 1
      // The same work per call as the worker's: a signed apiClaim and a signed URL.
      const id = randomUUID()
      const now = new Date()
      const apiClaim = signClaim({
        tenantId: ctx.fx.tenantId, serviceId: ctx.fx.serviceId, deliveryId: id, propertyId: null, addressId: null,
        expiresAt: Math.floor(now.getTime() / 1000) + 900
      }, CLAIM_KEY)
      const request = buildQueryRequest({
        id, webhookUrl: ctx.fx.webhookUrl, secret: ctx.fx.secret, previousSecret: null, customerWebId: ctx.fx.webId,
        customerName: ctx.fx.tenantName, assigneeUserId: ctx.fx.userId, instanceId: randomUUID(), stepId: randomUUID(),
        propertyId: null, addressId: null, event: null, changedFields: null, parameters: STEP_PARAMETERS
      }, { now, apiClaim, userAgent: USER_AGENT, timeoutMs: TIMEOUT_MS })
      try {
        const response = await http.send(request)
        if (response.status !== 200) failures += 1
      } catch {
        failures += 1
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, lane))
  const ms = performance.now() - started
  const usage = await meter()
  const calls = await takeCalls(ctx.providerPort)
  if (calls.ids.length !== count) failures += Math.abs(count - calls.ids.length)
  return { requests: count, ms, requestsPerSecond: count / (ms / 1000), usage, failures }
}

interface SteadyResult {
  steps: number
  rate: number
  seedMs: number
  seedOverran: boolean
  achievedRate: number
  lag: Spread
  arrivalLag: Spread
  settleLag: Spread
  /** Live mode: how late the feeder committed each step after its due time. */
  feederLag: Spread | undefined
  usage: Usage
  queries: QueryCounts | undefined
  problems: string[]
}

/**
 * Live variant of the steady load: each step is inserted when it falls due, in its own small
 * transaction with the notify triggers on, as a process started over the API would be; the worker
 * hears of it by NOTIFY. Returns how late each row's commit was after its due time.
 */
async function feed(ctx: Context, template: Template, count: number, spacingMs: number, start: number): Promise<number[]> {
  const lateness: number[] = []
  let inserted = 0
  while (inserted < count) {
    const now = Date.now()
    const due = Math.min(count, Math.floor((now - start) / spacingMs) + 1)
    if (due <= inserted) {
      await sleep(Math.max(1, start + inserted * spacingMs - now))
      continue
    }
    const first = start + inserted * spacingMs
    await seed(ctx.db, ctx.fx, template, due - inserted, new Date(first), spacingMs, true)
    const committed = Date.now()
    for (let i = inserted; i < due; i++) lateness.push(committed - Math.floor(start + i * spacingMs))
    inserted = due
  }
  return lateness
}

async function steady(ctx: Context, template: Template, perSecond: number, forSeconds: number): Promise<SteadyResult> {
  const count = perSecond * forSeconds
  const spacingMs = 1000 / perSecond
  if (args.live) return steadyLive(ctx, template, count, perSecond, forSeconds)
  const seedStarted = performance.now()
  const firstDue = new Date(Date.now() + leadMs)
  log(`steady: seeding ${count} steps due at ${perSecond}/s from ${leadMs} ms on`)
  const committedAt = await seed(ctx.db, ctx.fx, template, count, firstDue, spacingMs)
  const seedMs = performance.now() - seedStarted
  const seedOverran = committedAt > firstDue.getTime()
  if (seedOverran) log(`steady: seeding committed ${committedAt - firstDue.getTime()} ms after the first due time; raise --lead-ms`)
  await sleep(Math.max(0, firstDue.getTime() - Date.now()))
  const meter = await usageMeter(ctx)
  await ctx.queries?.()
  log(`steady: running for ${forSeconds} s`)
  await sleep(forSeconds * 1000)
  await drain(ctx, count, 'steady')
  const usage = await meter()
  const queries = await ctx.queries?.()
  const checked = await collect(ctx, template.id, count, 0)
  const started = checked.deliveries.map((d) => d.started).filter(Number.isFinite).sort((a, b) => a - b)
  const span = ((started.at(-1) ?? 0) - (started[0] ?? 0)) / 1000
  return {
    steps: count,
    rate: perSecond,
    seedMs,
    seedOverran,
    achievedRate: span > 0 ? (started.length - 1) / span : Number.NaN,
    lag: spread(checked.deliveries.map((d) => d.started - d.due)),
    arrivalLag: spread(checked.arrivalLag),
    settleLag: spread(checked.deliveries.map((d) => d.finished - d.due)),
    feederLag: undefined,
    usage,
    queries,
    problems: checked.problems
  }
}

async function steadyLive(ctx: Context, template: Template, count: number, perSecond: number, forSeconds: number): Promise<SteadyResult> {
  const start = Date.now() + 500
  await ctx.queries?.()
  const meter = await usageMeter(ctx)
  log(`steady (live): inserting ${count} steps as they fall due, ${perSecond}/s for ${forSeconds} s`)
  const feederLag = await feed(ctx, template, count, 1000 / perSecond, start)
  await drain(ctx, count, 'steady')
  const usage = await meter()
  const queries = await ctx.queries?.()
  const checked = await collect(ctx, template.id, count, 0)
  const started = checked.deliveries.map((d) => d.started).filter(Number.isFinite).sort((a, b) => a - b)
  const span = ((started.at(-1) ?? 0) - (started[0] ?? 0)) / 1000
  return {
    steps: count,
    rate: perSecond,
    seedMs: 0,
    seedOverran: false,
    achievedRate: span > 0 ? (started.length - 1) / span : Number.NaN,
    lag: spread(checked.deliveries.map((d) => d.started - d.due)),
    arrivalLag: spread(checked.arrivalLag),
    settleLag: spread(checked.deliveries.map((d) => d.finished - d.due)),
    feederLag: spread(feederLag),
    usage,
    queries,
    problems: checked.problems
  }
}

// ---- Output --------------------------------------------------------------------------------------

function table(rows: [string, string][]): string {
  const width = Math.max(...rows.filter(([, value]) => value !== '').map(([label]) => label.length))
  return rows.map(([label, value]) => (value === '' ? label : `  ${label.padEnd(width)}  ${value}`)).join('\n')
}

const ms = (value: number) => (Number.isFinite(value) ? `${value.toFixed(1)} ms` : 'n/a')
const mb = (kb: number) => (Number.isFinite(kb) ? `${(kb / 1024).toFixed(1)} MiB` : 'n/a')
const perS = (value: number) => (Number.isFinite(value) ? `${value.toFixed(0)} /s` : 'n/a')
const lagLine = (s: Spread) => `p50 ${ms(s.p50)}   p95 ${ms(s.p95)}   p99 ${ms(s.p99)}   max ${ms(s.max)}`
const share = (cpuMs: number, u: Usage) => `${(cpuMs / 10 / u.seconds).toFixed(0)}%`
const usageLine = (u: Usage, client: 'worker' | 'bench') =>
  `${client} ${share(client === 'worker' ? u.workerCpu : u.benchCpu, u)} of a core, ` +
  `${client === 'worker' ? `postgres ${share(u.postgresCpu, u)}, ` : ''}provider ${share(u.providerCpu, u)}, ` +
  `machine ${(u.machineBusy * 100).toFixed(0)}% busy (${u.seconds.toFixed(1)} s)`

// ---- Main ----------------------------------------------------------------------------------------

// Set by a SIGINT or SIGTERM: the run's own failure (its connections closed under it) is then no news.
let interrupted = false

/** Stops the run before it starts another process once an interrupt has begun the cleanup. */
function stillWanted(): void {
  if (interrupted) throw new Error('interrupted')
}

async function main(): Promise<number> {
  const admin = new pg.Client({ connectionString: SERVER_URL })
  const children: Child[] = []
  let db: pg.Client | undefined
  let http: HttpClient | undefined
  let created = false
  let dataDir: string | undefined
  // One cleanup, whoever asks first (a signal, an error, the end of the run); the others wait for it.
  let cleaning: Promise<void> | undefined
  const cleanupOnce = () => (cleaning ??= cleanup())
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return
    interrupted = true
    log(`${signal}: cleaning up`)
    void cleanupOnce().finally(() => process.exit(130))
  }
  async function cleanup(): Promise<void> {
    http?.close()
    await Promise.all(children.map((c) => stopChild(c, 15_000).catch(() => null)))
    await db?.end().catch(() => {})
    if (created && !args.keep) {
      await admin.query(`drop database if exists ${DATABASE} with (force)`).catch((error: unknown) => log(`could not drop ${DATABASE}: ${String(error)}`))
    } else if (created) log(`kept database ${DATABASE}`)
    await admin.end().catch(() => {})
    if (dataDir) rmSync(dataDir, { recursive: true, force: true })
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  try {
    await admin.connect()
    created = true // before: an interrupt during the create still drops it ("if exists")
    await admin.query(`create database ${DATABASE}`)
    const migrating = openPostgres(databaseUrl(DATABASE), { poolMax: 1 })
    try {
      await migrateToLatest(migrating)
    } finally {
      await migrating.close()
    }
    db = new pg.Client({ connectionString: databaseUrl(DATABASE) })
    await db.connect()

    stillWanted()
    const provider = runNode('provider', ['--import', 'tsx', 'scripts/bench/provider.ts', `--delay-ms=${delayMs}`], {})
    children.push(provider)
    const providerPort = Number((await waitFor('the provider to listen', 30_000, () => provider.output().match(/listening (\d+)/)?.[1])))
    const fx = await createFixture(db, providerPort)
    const history = int('history', args.history, 0) ?? 0
    const historyMs = history > 0 ? await seedHistory(db, fx.serviceId, history) : 0

    dataDir = mkdtempSync(join(tmpdir(), 'baton-bench-'))
    const workerEnv: Record<string, string> = {
      DATABASE_URL: databaseUrl(DATABASE),
      WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true',
      WEBHOOK_PER_HOST_CONCURRENCY: String(perHost),
      SCHEDULER_CONCURRENCY: String(concurrency),
      LOG_LEVEL: 'warn',
      BATON_DATA_DIR: dataDir,
      NODE_ENV: 'production',
      WORKER_HTTP_PORT: '0'
    }
    if (pool !== undefined) workerEnv.DATABASE_POOL_MAX = String(pool)
    if (pollMs !== undefined) workerEnv.SCHEDULER_POLL_INTERVAL_MS = String(pollMs)
    if (batchSize !== undefined) workerEnv.SCHEDULER_BATCH_SIZE = String(batchSize)
    stillWanted()
    const workerFlags = nodeFlags(args['node-defaults'], process.env.BENCH_WORKER_NODE_ARGS)
    const worker = runNode('worker', [
      ...(args.compiled && !args['count-queries'] ? [] : ['--import', 'tsx']),
      ...(args['count-queries'] ? ['--import', './scripts/bench/count-queries.ts'] : []),
      ...workerFlags,
      args.compiled ? join(compile(), 'src/server.js') : 'src/server.ts',
      '--role=worker'
    ], workerEnv)
    children.push(worker)
    const ctx: Context = { db, fx, worker, provider, providerPort }
    if (args['count-queries']) ctx.queries = queryCounter(worker)

    // Ready once its LISTEN connection is up: the scheduler loop starts right after.
    await waitFor('the worker to listen for work', 60_000, async () => {
      if (worker.process.exitCode !== null) throw new Error(`the worker exited at start:\n${worker.output()}`)
      const { rows } = await ctx.db.query<{ n: number }>(
        `select count(*)::int as n from pg_stat_activity where datname = $1 and query ilike 'listen %'`, [DATABASE])
      return (rows[0]?.n ?? 0) > 0 ? true : undefined
    }, 100)
    await sleep(500)
    const idle = procStatus(worker.process.pid ?? 0)

    // The same client the worker builds (src/scheduler/build.ts), for the bare loop and a warm-up of
    // the provider (so neither measurement pays for the provider's start-up).
    const clientOptions = {
      maxBodyBytes: 65_536, maxSockets: concurrency, userAgent: USER_AGENT, allowPrivateNetworks: true
    }
    http = createHttpClient(clientOptions)
    const client = http

    if (warmup > 0) {
      log(`warm-up: ${warmup} steps, then as many bare calls`)
      const template = await createTemplate(db, fx, 'warm-up')
      await seed(db, fx, template, warmup, new Date(), 0)
      await drain(ctx, warmup, 'warm-up')
      await takeCalls(providerPort)
    }
    await bareLoop(ctx, client, Math.max(warmup, 200))

    const output: [string, string][] = []
    const settings = `provider delay ${delayMs} ms, concurrency ${concurrency}, per-host ${perHost}, pool ${pool ?? 'default'}, poll ${pollMs ?? 'default'} ms, batch ${batchSize ?? 'default'}`
    output.push(['Baton scheduler benchmark', ''])
    output.push(['worker', `${args.compiled ? `node ${CACHE}/src/server.js` : 'node --import tsx src/server.ts'} --role=worker (pid ${worker.process.pid})`])
    output.push(['settings', settings])
    output.push(['machine', `${cpus().length} cores, node ${process.version}, database ${DATABASE}, warm-up ${warmup} steps`])
    output.push(['worker RSS when idle', `${mb(idle?.rssKb ?? Number.NaN)}   (node flags: ${workerFlags.join(' ') || 'none'})`])
    if (history > 0) output.push(['history', `${history} finished processes of another tenant, seeded in ${(historyMs / 1000).toFixed(1)} s, not analyzed`])

    let burstResult: BurstResult | undefined
    let bareResult: BareResult | undefined
    if (steps > 0) {
      burstResult = await burst(ctx, await createTemplate(db, fx, 'burst'), steps)
      const afterBurst = procStatus(worker.process.pid ?? 0)
      log(`bare loop: ${steps} calls, ${concurrency} at a time`)
      bareResult = await bareLoop(ctx, client, steps)
      output.push(['', ''])
      output.push([`Burst: ${steps} webhook steps due at once`, ''])
      output.push(['seeding (one transaction)', ms(burstResult.seedMs)])
      output.push(['scheduler', `${perS(burstResult.stepsPerSecond)}   (${(burstResult.drainMs / 1000).toFixed(2)} s from commit to the last success)`])
      output.push(['bare loop, same calls', `${perS(bareResult.requestsPerSecond)}   (${(bareResult.ms / 1000).toFixed(2)} s${bareResult.failures ? `, ${bareResult.failures} FAILED` : ''})`])
      output.push(['ratio scheduler / bare', `${(burstResult.stepsPerSecond / bareResult.requestsPerSecond).toFixed(2)}   (aim: at least 0.50)`])
      output.push(['first call after commit', ms(burstResult.firstCallMs)])
      output.push(['lag due → call start', lagLine(burstResult.lag)])
      output.push(['lag due → provider', lagLine(burstResult.arrivalLag)])
      output.push(['worker peak RSS (VmHWM)', mb(afterBurst?.hwmKb ?? Number.NaN)])
      output.push(['CPU, scheduler run', usageLine(burstResult.usage, 'worker')])
      output.push(['CPU, bare loop', usageLine(bareResult.usage, 'bench')])
      output.push(['CPU per step / call', `worker ${(burstResult.usage.workerCpu / steps).toFixed(2)} ms + postgres ${(burstResult.usage.postgresCpu / steps).toFixed(2)} ms` +
        ` per step; bare client ${(bareResult.usage.benchCpu / steps).toFixed(2)} ms per call; provider ${(bareResult.usage.providerCpu / steps).toFixed(2)} ms per call`])
      if (burstResult.queries) output.push(...queryRows(burstResult.queries, steps))
      for (const problem of burstResult.problems) output.push(['PROBLEM', problem])
    }

    let steadyResult: SteadyResult | undefined
    if (rate !== undefined) {
      steadyResult = await steady(ctx, await createTemplate(db, fx, 'steady'), rate, seconds)
      output.push(['', ''])
      const how = args.live ? 'each inserted when due, woken by NOTIFY' : 'seeded ahead with their due times'
      output.push([`Steady: ${rate} steps/s for ${seconds} s (${steadyResult.steps} steps, ${how})`, ''])
      if (steadyResult.feederLag) output.push(['feeder: due → committed', lagLine(steadyResult.feederLag)])
      output.push(['calls started at', `${perS(steadyResult.achievedRate)}`])
      output.push(['lag due → call start', `${lagLine(steadyResult.lag)}   (aim: p99 ≤ 50 ms)`])
      output.push(['lag due → provider', lagLine(steadyResult.arrivalLag)])
      output.push(['lag due → step done', lagLine(steadyResult.settleLag)])
      output.push(['CPU', usageLine(steadyResult.usage, 'worker')])
      output.push(['CPU per step', `worker ${(steadyResult.usage.workerCpu / steadyResult.steps).toFixed(2)} ms + postgres ${(steadyResult.usage.postgresCpu / steadyResult.steps).toFixed(2)} ms`])
      if (steadyResult.queries) output.push(...queryRows(steadyResult.queries, steadyResult.steps))
      if (steadyResult.seedOverran) output.push(['PROBLEM', 'seeding ended after the first due time; raise --lead-ms'])
      for (const problem of steadyResult.problems) output.push(['PROBLEM', problem])
    }

    const final = procStatus(worker.process.pid ?? 0)
    const code = await stopChild(worker, 20_000)
    output.push(['', ''])
    output.push(['worker peak RSS (VmHWM), whole run', mb(final?.hwmKb ?? Number.NaN)])
    output.push(['worker exit on SIGTERM', String(code)])
    const errors = worker.output().split('\n').filter((line) => /"level":(50|60)/.test(line))
    if (errors.length > 0) output.push(['worker errors logged', `${errors.length}; first: ${errors[0]?.slice(0, 300)}`])

    process.stdout.write(`\n${table(output)}\n\n`)
    const failed = (burstResult?.problems.length ?? 0) + (steadyResult?.problems.length ?? 0) + (bareResult?.failures ?? 0) + errors.length
    return failed > 0 ? 1 : 0
  } finally {
    await cleanupOnce()
  }
}


main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (interrupted) return
    process.stderr.write(`[bench] failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    process.exit(1)
  }
)
