// The database answers, but refuses Baton while it runs: it takes no writes (a standby a failover left
// behind, default_transaction_read_only), or it refuses Baton's user (a password changed, a role that may
// no longer log in). A second app and a scheduler reach the test's database through a fault-injecting TCP
// proxy, whose cuts make their connections new; the settings are the test database's and a role of the
// test's own, undone after. Every answer is a 2xx or a 503 problem with Retry-After, nothing is called
// twice, and all comes back by itself once the setting is undone.
import { randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import pino from 'pino'
import { sql } from '../../src/db/kysely.js'
import t, { type Test } from 'tap'
import { systemClock } from '../../src/adapters/clock.js'
import type { Response } from '../helpers/app.js'
import { adminQuery } from '../helpers/database.js'
import { appBehindFaultProxy } from '../helpers/faulty-app.js'
import { setupRuntime } from '../helpers/runtime.js'

const rt = await setupRuntime(t)
const { rows } = await sql<{ name: string }>`select current_database() as name`.execute(rt.db)
const database = rows[0]!.name
const { proxy, db: faultyDb, api } = await appBehindFaultProxy(t, rt, { poolMax: 4, statementTimeoutMs: 2000 })
const templateId = await rt.template([{ kind: 'task', name: 'Call the owner' }])
const start = () => api.post('/v1/process-instances', { templateId, responsibleUserId: rt.worker.id, propertyId: rt.propertyId })
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function checkUnavailable(t: Test, response: Response): void {
  t.equal(response.statusCode, 503, response.body)
  t.match(response.headers['content-type'], /^application\/problem\+json/)
  t.equal(response.headers['retry-after'], '2')
}

async function readOnly(on: boolean): Promise<void> {
  await adminQuery(on ? `alter database ${database} set default_transaction_read_only = on` : `alter database ${database} reset default_transaction_read_only`)
}
t.teardown(() => readOnly(false))

t.test('a database that takes no writes: a start answers 503, not 500, /health/ready says so, and both work again once it takes them, without a restart', async (t) => {
  await readOnly(true)
  proxy.cutAll()
  checkUnavailable(t, await start())
  const ready = await api.get('/health/ready')
  checkUnavailable(t, ready)
  t.match(ready.data.detail, /^The database takes no writes \(read-only\)/)
  await readOnly(false)
  // The probe alone replaces the read-only connection it used: a load balancer sends no requests meanwhile.
  const probes: number[] = []
  for (let i = 0; i < 10 && probes.at(-1) !== 200; i++) probes.push((await api.get('/health/ready')).statusCode)
  t.equal(probes.at(-1), 200, `ready again after ${probes.join(' ')}`)
  await readOnly(true)
  proxy.cutAll()
  checkUnavailable(t, await start())
  await readOnly(false)
  // The connections the pool made meanwhile are read-only for their whole life: each goes after its refusal.
  const answers: number[] = []
  for (let i = 0; i < 10 && answers.at(-1) !== 201; i++) answers.push((await start()).statusCode)
  t.equal(answers.at(-1), 201, `created again after ${answers.join(' ')}`)
  t.ok(answers.every((s) => s === 201 || s === 503), 'and nothing but 503 before')
})

t.test('while the database takes no writes, each request answers 503 saying so, and the log warns once for them all', async (t) => {
  const lines: { level: number; msg: string; answered503?: number }[] = []
  const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => { lines.push(JSON.parse(String(chunk))); done() } })
  const logged = await appBehindFaultProxy(t, rt, { poolMax: 2, statementTimeoutMs: 2000, logger: pino({ level: 'warn' }, sink) })
  const startLogged = () => logged.api.post('/v1/process-instances', { templateId, responsibleUserId: rt.worker.id, propertyId: rt.propertyId })
  await readOnly(true)
  t.teardown(() => readOnly(false))
  logged.proxy.cutAll()
  for (let i = 0; i < 5; i++) {
    const response = await startLogged()
    checkUnavailable(t, response)
    t.match(response.data.detail, /^The database takes no writes \(read-only\); retry shortly\./, 'the answer says why')
  }
  await readOnly(false)
  t.match(lines.filter((line) => line.level >= 40), [{ level: 40, msg: 'the database takes no writes (read-only): requests answer 503 with Retry-After' }],
    'one warning at the first, none for the next four within its few seconds')
  await logged.app.close()
  t.match(lines.filter((line) => line.level >= 40).slice(1), [{
    level: 40, msg: 'the database takes no writes (read-only): 4 more requests answered 503 since the last warning', answered503: 4
  }],
    'and their count when the app closes')
})

t.test('a call whose outcome meets a database that takes no writes is recorded once it takes them again, not made twice', async (t) => {
  const webhook = await rt.template([{ kind: 'webhook', name: 'Ask ValueCo' }])
  rt.clock.set(new Date())
  rt.provider.always({ status: 200, body: 'ok', delayMs: 300 })
  const scheduler = rt.newScheduler({ pollIntervalMs: 200 }, undefined, { db: faultyDb, clock: systemClock })
  const N = 6
  for (let i = 0; i < N; i++) await rt.start(webhook)
  await scheduler.start()
  t.teardown(() => scheduler.stop(1000))
  while (rt.provider.calls.length < 2) await sleep(20)
  await readOnly(true)
  proxy.cutAll()
  await sleep(1000)
  await readOnly(false)
  const back = Date.now()
  const succeeded = async () => (await rt.db.selectFrom('deliveries').select('id').where('status', '=', 'succeeded').execute()).length
  while ((await succeeded()) < N && Date.now() - back < 15_000) await sleep(100)
  t.equal(await succeeded(), N, `all ${N} deliveries succeeded ${Date.now() - back} ms after the database took writes again`)
  t.equal(rt.provider.calls.length, N, 'each was called once')
  const attempts = await rt.db.selectFrom('delivery_attempts').select(['outcome']).execute()
  t.same(attempts.map((a) => a.outcome), Array(N).fill('succeeded'), 'one attempt each: none aborted and made again')
})

t.test('a user the server no longer lets in: 503, not 500, and the app works again once it may', async (t) => {
  const role = `baton_test_role_${randomBytes(4).toString('hex')}`
  await adminQuery(`create role ${role} login superuser`)
  t.teardown(async () => {
    await adminQuery(`alter role ${role} login`)
    await adminQuery(`select pg_terminate_backend(pid) from pg_stat_activity where usename = '${role}'`)
    await adminQuery(`drop role if exists ${role}`)
  })
  const other = await appBehindFaultProxy(t, rt, { poolMax: 2, statementTimeoutMs: 2000, user: role })
  const startAs = () => other.api.post('/v1/process-instances', { templateId, responsibleUserId: rt.worker.id, propertyId: rt.propertyId })
  t.equal((await startAs()).statusCode, 201)
  await adminQuery(`alter role ${role} nologin`)
  other.proxy.cutAll()
  const refused = await startAs()
  checkUnavailable(t, refused)
  t.match(refused.data.detail, /^The database did not answer; retry shortly\./, 'the client hears no more of the database\'s state')
  checkUnavailable(t, await other.api.get(`/v1/process-instances?limit=1`))
  const ready = await other.api.get('/health/ready')
  checkUnavailable(t, ready)
  await adminQuery(`alter role ${role} login`)
  t.equal((await startAs()).statusCode, 201, 'created again')
})
