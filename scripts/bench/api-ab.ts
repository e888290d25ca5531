// Interleaved A/B of the API's start, read and advance between compiled trees (each worktree's
// node_modules/.cache/baton-bench from an earlier `bench:api --compiled`): each variant has its own
// API process and database, and short bursts alternate between them, so both meet the same machine.
//   tsx scripts/bench/api-ab.ts --rounds 6 --seconds 5 ../baton-base ../baton-mine
//   tsx scripts/bench/api-ab.ts --routes read ../baton-base ../baton-mine      only these (start, read, advance)
//   tsx scripts/bench/api-ab.ts --flags= --flags=--single-threaded-gc . .     node flags of each variant, in order
//   tsx scripts/bench/api-ab.ts --routes start,advance --history 1000000 --history 0 . .     one tree, with and without history
// Each API runs with the node flags its own tree's `npm start` passes (as bench:api's do), then the
// variant's own --flags.
// --history N (in order, as --flags): N finished processes of another tenant in that variant's database
// first, not analyzed (scripts/bench/history.ts), so the same tree meets history and an empty database
// in alternating bursts, on the same machine. BENCH_HISTORY_TENANT=first: the history tenant's keys
// sort before the bench tenant's (scripts/bench/history.ts says why that matters). Autovacuum is off
// on the machines these ran on; where it runs, it may analyze the history's tables partway through.
import { randomBytes } from 'node:crypto'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import pg from 'pg'
import autocannon from 'autocannon'
import { fixture, routesOf, startMany, type Fixture } from './api-fixture.js'
import { seedHistory } from './history.js'
import { databaseUrl, freePort, nodeFlags, procStatus, SERVER_URL, stopChild, waitFor, type Child } from './lib.js'

const { values: args, positionals } = parseArgs({ allowPositionals: true, options: {
  rounds: { type: 'string', default: '6' }, seconds: { type: 'string', default: '5' }, connections: { type: 'string', default: '32' },
  routes: { type: 'string', default: 'start,read,advance' }, flags: { type: 'string', multiple: true, default: [] },
  history: { type: 'string', multiple: true, default: [] } } })
// Each advance takes one of a process's 20 steps: enough processes for 2,000 advances a second, all
// bursts of one variant (a faster machine ran 1,500 out).
const ADVANCEABLE = Math.ceil((2 + Number(args.rounds) * Number(args.seconds)) * 2000 / 19)
const ROUTES = routesOf(args.routes)
for (const [option, values] of [['--flags', args.flags], ['--history', args.history]] as const) {
  if (values.length > positionals.length) throw new Error(`${option}: ${values.length} given for ${positionals.length} trees (one for each, in order)`)
}
const bad = args.history.find((n) => !/^\d+$/.test(n))
if (bad !== undefined) throw new Error(`--history: "${bad}" is not a whole number of processes`)
const OPERATOR_KEY = `bench-operator-${randomBytes(12).toString('hex')}`
const admin = new pg.Client({ connectionString: SERVER_URL })
await admin.connect()

interface Variant { name: string; db: string; api: Child; base: string; fx: Fixture; advanceable: string[]; turn: number; readable: string[]
  tally: Record<string, { requests: number; apiMs: number; pgMs: number; seconds: number }[]> }

function start(dir: string, flags: string | undefined, db: string, port: number): Child {
  const child = spawn(process.execPath, [...nodeFlags(false, flags, dir), join(dir, 'node_modules/.cache/baton-bench/src/server.js'), '--role=api'], {
    cwd: dir, stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, DATABASE_URL: databaseUrl(db), PORT: String(port), LOG_LEVEL: 'warn', NODE_ENV: 'production', BATON_ADMIN_TOKEN: OPERATOR_KEY,
      WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true', DATABASE_POOL_MAX: '16', RATE_LIMIT_MAX: '0' } })
  let text = ''
  child.stdout?.on('data', (c: Buffer) => { text += c.toString() })
  child.stderr?.on('data', (c: Buffer) => { text += c.toString() })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  return { name: dir, process: child, output: () => text, exited }
}

/** CPU milliseconds of each server process of the database now, by pid. */
async function pgCpu(db: string): Promise<Map<number, number>> {
  const { rows } = await admin.query<{ pid: number }>('select pid from pg_stat_activity where datname = $1', [db])
  return new Map(rows.map((r) => [r.pid, procStatus(r.pid)?.cpuMs ?? 0]))
}

/** CPU used between two readings by the processes of the second (a new one counts from 0). */
const pgDelta = (before: Map<number, number>, after: Map<number, number>) =>
  [...after].reduce((sum, [pid, ms]) => sum + ms - (before.get(pid) ?? 0), 0)

async function burst(v: Variant, route: string, request: Record<string, unknown>, seconds: number) {
  const [a0, p0] = [procStatus(v.api.process.pid ?? 0)?.cpuMs ?? 0, await pgCpu(v.db)]
  const result = await autocannon({ url: v.base, connections: Number(args.connections), duration: seconds, requests: [request] })
  const [a1, p1] = [procStatus(v.api.process.pid ?? 0)?.cpuMs ?? 0, await pgCpu(v.db)]
  if (result.non2xx > 0) throw new Error(`${v.name} ${route}: ${result.non2xx} not 2xx`)
  ;(v.tally[route] ??= []).push({ requests: result.requests.total, apiMs: a1 - a0, pgMs: pgDelta(p0, p1), seconds })
}

const startRequest = (v: Variant) => ({ method: 'POST', path: '/v1/process-instances', headers: v.fx.json,
  body: JSON.stringify({ templateId: v.fx.startTemplate, responsibleUserId: v.fx.userId }) })
const advanceRequest = (v: Variant) => ({ method: 'POST', path: `/v1/process-instances/${v.advanceable[0]}/advance`, headers: v.fx.json,
  body: JSON.stringify({ outcome: 'done' }),
  setupRequest: (r: { path: string }) => ({ ...r, path: `/v1/process-instances/${v.advanceable[v.turn++ % v.advanceable.length]}/advance` }) })
const readRequest = (v: Variant) => ({ method: 'GET', path: `/v1/process-instances/${v.readable[0]}`, headers: { authorization: v.fx.json.authorization! },
  setupRequest: (r: { path: string }) => ({ ...r, path: `/v1/process-instances/${v.readable[v.turn++ % v.readable.length]}` }) })
const requests: Record<string, (v: Variant) => Record<string, unknown>> = { start: startRequest, read: readRequest, advance: advanceRequest }

const variants: Variant[] = []
try {
  for (const [index, dir] of positionals.entries()) {
    const db = `baton_apiab_${process.pid}_${variants.length}`
    await admin.query(`create database ${db}`)
    const port = await freePort()
    const flags = args.flags[index]
    const api = start(dir, flags, db, port)
    const base = `http://127.0.0.1:${port}`
    await waitFor('the API to be ready', 120_000, async () => (await fetch(`${base}/health/ready`).then((r) => r.status, () => 0)) === 200 || undefined)
    const fx = await fixture(base, OPERATOR_KEY)
    const history = Number(args.history[index] ?? '0')
    if (history > 0) {
      const seeding = new pg.Client({ connectionString: databaseUrl(db) })
      await seeding.connect()
      try {
        await seedHistory(seeding, fx.serviceId, history)
      } finally {
        await seeding.end()
      }
    }
    const advanceable = ROUTES.includes('advance') ? await startMany(base, fx, fx.advanceTemplate, ADVANCEABLE) : []
    const readable = ROUTES.includes('read') ? await startMany(base, fx, fx.startTemplate, 200) : []
    const label = [dir, flags, history > 0 ? `history ${history}` : ''].filter(Boolean).join(' ')
    variants.push({ name: label, db, api, base, fx, advanceable, readable, turn: 0, tally: {} })
  }
  for (const v of variants) for (const route of ROUTES) await burst(v, `warm ${route}`, requests[route]!(v), 2)
  const seconds = Number(args.seconds)
  for (let round = 0; round < Number(args.rounds); round++) {
    const order = round % 2 === 0 ? variants : [...variants].reverse()
    for (const route of ROUTES) for (const v of order) await burst(v, route, requests[route]!(v), seconds)
  }
  for (const route of ROUTES) {
    for (const v of variants) {
      const runs = v.tally[route] ?? []
      const per = runs.map((r) => ({ rps: r.requests / r.seconds, api: r.apiMs / r.requests, pg: r.pgMs / r.requests }))
      const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN
      const sum = runs.reduce((s, r) => ({ n: s.n + r.requests, a: s.a + r.apiMs, p: s.p + r.pgMs }), { n: 0, a: 0, p: 0 })
      process.stdout.write(`${route.padEnd(8)} ${v.name.padEnd(18)} req/s med ${med(per.map((p) => p.rps)).toFixed(0)}  API ${(sum.a / sum.n).toFixed(2)} ms + PG ${(sum.p / sum.n).toFixed(2)} ms per request (all bursts)`
        + `  API by burst ${per.map((p) => p.api.toFixed(2)).join(' ')}  PG by burst ${per.map((p) => p.pg.toFixed(2)).join(' ')}\n`)
    }
  }
} finally {
  for (const v of variants) await stopChild(v.api, 10_000)
  for (const v of variants) await admin.query(`drop database if exists ${v.db} with (force)`)
  await admin.end()
}

