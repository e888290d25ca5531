// API benchmark (issue 9): the API alone (`src/server.ts --role=api`) on a fresh Postgres database,
// against pgbench on the same server in the same run.
//
//   npm run bench:api                       pgbench -N (scale 10, 8 clients), then each route for 10 s
//   npm run bench:api -- --seconds 20 --connections 32 --compiled
//   npm run bench:api -- --compiled --cpu-prof prof        a V8 CPU profile of the API, written when it stops
//   npm run bench:api -- --count-queries    the API's SQL statements per request, by kind (round trips, with BEGIN and COMMIT)
//   npm run bench:api -- --compiled --node-defaults      node's own heap settings instead of those npm start passes
//   npm run bench:api -- --compiled --history 1000000     first N finished processes of another tenant, not analyzed
//   npm run bench:api -- --compiled --routes read --cpu-prof prof     only these routes (start, read, advance)
//   npm run bench:api -- --compiled --keep      keeps the API's database afterwards, for a look at its tables
//
// BENCH_API_NODE_ARGS: extra node flags for the API, after those npm start passes (a later flag wins).
//
// Routes: POST /v1/process-instances (a webhook step, then a task, as in the README's tour),
// GET /v1/process-instances/{id}, and POST /v1/process-instances/{id}/advance (task steps of
// processes started beforehand, taken round robin). Each prints requests/s, p50/p99 latency, the
// ratio to pgbench's transactions/s, the API's CPU per request and Postgres's, and the API's RSS.
import { randomBytes } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import pg from 'pg'
import autocannon from 'autocannon'
import { fixture, routesOf, startMany } from './api-fixture.js'
import { seedHistory } from './history.js'
import { compile, databaseUrl, freePort, log, nodeFlags, procStatus, runNode, SERVER_URL, sleep, stopChild, waitFor, type Child } from './lib.js'

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    connections: { type: 'string', default: '32' },
    compiled: { type: 'boolean', default: false },
    /** A folder for a V8 CPU profile of the API (node --cpu-prof), written when it stops. */
    'cpu-prof': { type: 'string' },
    /** Counts the API's SQL statements per request by kind (scripts/bench/count-queries.ts, loaded with tsx). */
    'count-queries': { type: 'boolean', default: false },
    'pgbench-seconds': { type: 'string', default: '10' },
    /** Runs the API with node's own heap settings, not those of `npm start` (NODE_HEAP_FLAGS). */
    'node-defaults': { type: 'boolean', default: false },
    /** Seeds N finished processes of another tenant before the routes (scripts/bench/history.ts), not analyzed. */
    history: { type: 'string' },
    /** The routes to load, by name (start, read, advance), comma-separated: a profile of one alone. */
    routes: { type: 'string', default: 'start,read,advance' },
    /** Keeps the API's database afterwards, for a look at its tables and plans. */
    keep: { type: 'boolean', default: false }
  }
})
const SECONDS = Number(args.seconds)
const ROUTES = new Set(routesOf(args.routes))
const CONNECTIONS = Number(args.connections)
const DATABASE = `baton_apibench_${process.pid}`
const PGBENCH_DATABASE = `baton_pgbench_${process.pid}`
const OPERATOR_KEY = `bench-operator-${randomBytes(12).toString('hex')}`
/** The line count-queries.ts prints its tallies on (--count-queries), and how many it has printed. */
const QUERY_MARK = 'BENCH_QUERY_COUNTS '
let dumps = 0

interface RouteResult {
  route: string
  requestsPerSecond: number
  p50: number
  p99: number
  non2xx: number
  apiCpuMs: number
  postgresCpuMs: number
  /** The load generator's (this process's) CPU per request. */
  loadCpuMs: number
  /** With --count-queries: statements per request by kind. */
  statements?: Record<string, number>
}

const admin = new pg.Client({ connectionString: SERVER_URL })
await admin.connect()
let api: Child | undefined
try {
  const tps = pgbench()
  await admin.query(`create database ${DATABASE}`)
  const port = await freePort()
  const counting = args['count-queries']
  const script = args.compiled ? join(compile(), 'src/server.js') : 'src/server.ts'
  const flags = [
    ...(args['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${args['cpu-prof']}`] : []),
    ...(args.compiled && !counting ? [] : ['--import', 'tsx']),
    ...(counting ? ['--import', './scripts/bench/count-queries.ts'] : []),
    ...nodeFlags(args['node-defaults'], process.env.BENCH_API_NODE_ARGS)
  ]
  api = runNode('api', [...flags, script, '--role=api'], {
    DATABASE_URL: databaseUrl(DATABASE), PORT: String(port), LOG_LEVEL: 'warn', NODE_ENV: 'production', BATON_ADMIN_TOKEN: OPERATOR_KEY,
    WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true', DATABASE_POOL_MAX: '16', RATE_LIMIT_MAX: '0'
  })
  const base = `http://127.0.0.1:${port}`
  await waitFor('the API to be ready', 120_000, async () => (await fetch(`${base}/health/ready`).then((r) => r.status, () => 0)) === 200 || undefined)
  await sleep(500)
  const idle = procStatus(api.process.pid ?? 0)
  const fx = await fixture(base, OPERATOR_KEY)
  const history = Math.max(0, Number.parseInt(args.history ?? '0', 10) || 0)
  let historyMs = 0
  if (history > 0) {
    const db = new pg.Client({ connectionString: databaseUrl(DATABASE) })
    await db.connect()
    try {
      historyMs = await seedHistory(db, fx.serviceId, history)
    } finally {
      await db.end()
    }
  }
  const results: RouteResult[] = []

  if (ROUTES.has('start')) results.push(await load(api, 'POST /v1/process-instances', base, {
    method: 'POST', path: '/v1/process-instances', headers: fx.json, body: JSON.stringify({ templateId: fx.startTemplate, responsibleUserId: fx.userId })
  }))
  const ids = ROUTES.has('read') ? await startMany(base, fx, fx.startTemplate, 200) : []
  let next = 0
  if (ROUTES.has('read')) results.push(await load(api, 'GET /v1/process-instances/{id}', base, {
    method: 'GET', path: `/v1/process-instances/${ids[0]}`, headers: { authorization: fx.json.authorization! },
    setupRequest: (request: { path: string }) => ({ ...request, path: `/v1/process-instances/${ids[next++ % ids.length]}` })
  }))
  const advanceable = ROUTES.has('advance') ? await startMany(base, fx, fx.advanceTemplate, 1000) : []
  let turn = 0
  if (ROUTES.has('advance')) results.push(await load(api, 'POST /v1/process-instances/{id}/advance', base, {
    method: 'POST', path: `/v1/process-instances/${advanceable[0]}/advance`, headers: fx.json, body: JSON.stringify({ outcome: 'done' }),
    setupRequest: (request: { path: string }) => ({ ...request, path: `/v1/process-instances/${advanceable[turn++ % advanceable.length]}/advance` })
  }))
  const rss = procStatus(api.process.pid ?? 0)

  process.stdout.write(`\nAPI benchmark: ${CONNECTIONS} connections, ${SECONDS} s a route, API ${args.compiled ? 'compiled' : 'under tsx'}\n`)
  process.stdout.write(`  pgbench -N (scale 10, 8 clients)    ${tps.toFixed(0)} tps\n`)
  if (history > 0) process.stdout.write(`  history                             ${history} finished processes of another tenant, seeded in ${(historyMs / 1000).toFixed(1)} s, not analyzed\n`)
  for (const r of results) {
    process.stdout.write(`  ${r.route.padEnd(42)} ${r.requestsPerSecond.toFixed(0).padStart(6)} req/s   p50 ${r.p50} ms   p99 ${r.p99} ms   `
      + `ratio ${(r.requestsPerSecond / tps).toFixed(2)}   API CPU ${r.apiCpuMs.toFixed(2)} ms + Postgres ${r.postgresCpuMs.toFixed(2)} ms per request`
      + ` (load generator ${r.loadCpuMs.toFixed(2)} ms)`
      + `${r.non2xx > 0 ? `   (${r.non2xx} not 2xx)` : ''}\n`)
    if (r.statements) {
      const total = Object.values(r.statements).reduce((sum, n) => sum + n, 0)
      process.stdout.write(`    statements per request ${total.toFixed(2)}\n`)
      for (const [kind, n] of Object.entries(r.statements)) process.stdout.write(`      ${n.toFixed(2)}  ${kind}\n`)
    }
  }
  process.stdout.write(`  API RSS                                   ${((rss?.rssKb ?? 0) / 1024).toFixed(1)} MiB now, peak ${((rss?.hwmKb ?? 0) / 1024).toFixed(1)} MiB`
    + ` (${((idle?.rssKb ?? 0) / 1024).toFixed(1)} MiB when ready; node flags: ${flags.join(' ') || 'none'})\n`)
  process.stdout.write('  aims: start and advance at least 0.25 of pgbench, the read 0.6; API RSS at most 150 MiB\n')
} finally {
  if (api) await stopChild(api, 10_000)
  if (args.keep) log(`kept the database ${DATABASE}`)
  else await admin.query(`drop database if exists ${DATABASE} with (force)`)
  await admin.query(`drop database if exists ${PGBENCH_DATABASE} with (force)`)
  await admin.end()
}

/** pgbench -N on a database of its own: the server's transactions per second for this machine now. */
function pgbench(): number {
  const url = new URL(SERVER_URL)
  const common = ['-h', url.hostname, '-p', url.port || '5432', '-U', decodeURIComponent(url.username || 'postgres')]
  const run = (argv: string[]) => spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' })
  run(['createdb', ...common, PGBENCH_DATABASE])
  log('pgbench: initialising scale 10')
  const init = run(['pgbench', ...common, '-i', '-q', '-s', '10', PGBENCH_DATABASE])
  if (init.status !== 0) throw new Error(`pgbench -i failed: ${init.stderr}`)
  log(`pgbench -N: 8 clients for ${args['pgbench-seconds']} s`)
  const bench = run(['pgbench', ...common, '-N', '-c', '8', '-j', '2', '-T', String(args['pgbench-seconds']), PGBENCH_DATABASE])
  const tps = Number(/tps = ([\d.]+)/.exec(bench.stdout)?.[1])
  if (!Number.isFinite(tps)) throw new Error(`pgbench failed: ${bench.stdout}${bench.stderr}`)
  return tps
}

/** CPU milliseconds used so far by the server processes of the API's database. */
async function postgresCpuMs(): Promise<number> {
  const { rows } = await admin.query<{ pid: number }>('select pid from pg_stat_activity where datname = $1', [DATABASE])
  return rows.reduce((sum, r) => sum + (procStatus(r.pid)?.cpuMs ?? 0), 0)
}

async function load(api: Child, route: string, base: string, request: Record<string, unknown>): Promise<RouteResult> {
  log(`${route}: ${CONNECTIONS} connections for ${SECONDS} s`)
  await autocannon({ url: base, connections: CONNECTIONS, duration: 2, requests: [request] })
  await sleep(200)
  if (args['count-queries']) await queryCounts(api)
  const [apiBefore, pgBefore] = [procStatus(api.process.pid ?? 0)?.cpuMs ?? 0, await postgresCpuMs()]
  const loadBefore = process.cpuUsage()
  const result = await autocannon({ url: base, connections: CONNECTIONS, duration: SECONDS, requests: [request] })
  const loadCpu = process.cpuUsage(loadBefore)
  const [apiAfter, pgAfter] = [procStatus(api.process.pid ?? 0)?.cpuMs ?? 0, await postgresCpuMs()]
  const total = Math.max(1, result.requests.total)
  const counts = args['count-queries'] ? await queryCounts(api) : undefined
  return {
    ...(counts ? { statements: Object.fromEntries(Object.entries(counts).map(([kind, t]) => [kind, t.count / total])) } : {}),
    route,
    requestsPerSecond: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    non2xx: result.non2xx,
    apiCpuMs: (apiAfter - apiBefore) / total,
    postgresCpuMs: (pgAfter - pgBefore) / total,
    loadCpuMs: (loadCpu.user + loadCpu.system) / 1000 / total
  }
}


/** The API's statements since the last call, by kind (count-queries.ts prints them when asked on stdin). */
async function queryCounts(api: Child): Promise<Record<string, { count: number; ms: number }>> {
  const wanted = `${QUERY_MARK}${dumps++} `
  api.process.stdin?.write('dump\n')
  const line = await waitFor("the API's statement counts", 10_000, () => api.output().split('\n').find((l) => l.startsWith(wanted)))
  return JSON.parse(line.slice(wanted.length)) as Record<string, { count: number; ms: number }>
}
