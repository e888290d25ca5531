// The database stops answering without closing anything: a network partition, a firewall or NAT that
// forgot the connections. Nothing is refused or reset; packets vanish. The app and the workers reach the
// test's database through a proxy whose black hole keeps every socket open and passes nothing more on
// the connections it swallowed, even after it ends (as a forgotten connection stays lost).
import { sql } from '../../src/db/kysely.js'
import t from 'tap'
import { systemClock } from '../../src/adapters/clock.js'
import { openPostgres } from '../../src/db/connect.js'
import { WORK_CHANNEL } from '../../src/db/wakeups.js'
import type { Response } from '../helpers/app.js'
import { appBehindFaultProxy } from '../helpers/faulty-app.js'
import { setupRuntime } from '../helpers/runtime.js'

const STATEMENT_TIMEOUT_MS = 1000
const CONNECT_TIMEOUT_MS = 1000
/** node-postgres gives up on an unanswered statement this long after the server's own timeout. */
const CLIENT_MARGIN_MS = 2000

const rt = await setupRuntime(t)
const { proxy, db: faultyDb, api } = await appBehindFaultProxy(t, rt, { poolMax: 4, statementTimeoutMs: STATEMENT_TIMEOUT_MS, env: { RATE_LIMIT_MAX: '0' } })
const templateId = await rt.template([{ kind: 'task', name: 'Call the owner' }])
const start = () => api.post('/v1/process-instances', { templateId, responsibleUserId: rt.worker.id, propertyId: rt.propertyId })
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
t.teardown(() => proxy.blackHole(false))

async function timed<T>(f: () => Promise<T>): Promise<{ answer: T; ms: number }> {
  const began = Date.now()
  const answer = await f()
  return { answer, ms: Date.now() - began }
}

/** Every connection of the app's pool open and idle. */
async function fillPool(): Promise<void> {
  await Promise.all(Array.from({ length: 4 }, () => sql`select pg_sleep(0.05)`.execute(faultyDb)))
}

const shown = (answers: { answer: Response; ms: number }[]) => answers.map((a) => `${a.answer.statusCode} in ${a.ms} ms`).join(', ')

t.test('requests during a black hole answer 503 within the statement timeout plus the client margin; /health/ready within its 2 s', async (t) => {
  await fillPool()
  proxy.blackHole(true)
  // Four take the pool's connections, whose statements go unanswered; two wait for a connection of the full pool.
  const during = await Promise.all(Array.from({ length: 6 }, () => timed(start)))
  const ready = await timed(() => api.get('/health/ready'))
  proxy.blackHole(false)
  t.comment(`during: ${shown(during)}; /health/ready ${ready.answer.statusCode} in ${ready.ms} ms`)
  for (const { answer, ms } of during) {
    t.equal(answer.statusCode, 503)
    t.match(answer.headers['content-type'], /^application\/problem\+json/)
    t.equal(answer.headers['retry-after'], '2')
    t.ok(ms < STATEMENT_TIMEOUT_MS + CLIENT_MARGIN_MS + 1000, `answered in ${ms} ms`)
  }
  t.equal(ready.answer.statusCode, 503)
  t.equal(ready.answer.data.detail, 'The database is not reachable.')
  t.ok(ready.ms < 2500, 'the readiness probe answers within its own 2 s')
  // The connections that met the black hole were dropped with their statements: none is handed out again.
  const after = await timed(start)
  t.equal(after.answer.statusCode, 201, `and the next start works at once (${after.ms} ms)`)
})

t.test('connections a short black hole swallowed while idle: one request meets one, the rest are replaced, not each tried', async (t) => {
  await fillPool()
  proxy.blackHole(true)
  await sleep(300)
  proxy.blackHole(false)
  // Before, each of the pool's four idle connections was handed out again and held its request for the
  // client's timeout before a 503: four in a row, 12 s in all, with the network back.
  const after: { answer: Response; ms: number }[] = []
  for (let i = 0; i < 6; i++) after.push(await timed(start))
  t.comment(`after the black hole: ${shown(after)}`)
  const unavailable = after.filter((a) => a.answer.statusCode === 503)
  t.ok(unavailable.length <= 1, `at most the first request meets a lost connection: ${unavailable.length} answered 503`)
  t.same(after.slice(1).map((a) => a.answer.statusCode), Array(5).fill(201), 'the rest are created')
})

t.test('a worker across a black hole: its LISTEN connection is found lost and made again, so new work wakes it at once; its stop is bounded', async (t) => {
  const webhook = await rt.template([{ kind: 'webhook', name: 'Ask WakeCo' }])
  rt.clock.set(new Date())
  rt.provider.always({ status: 200, body: 'ok' })
  const handle = openPostgres(proxy.url(rt.databaseUrl), {
    poolMax: 4, statementTimeoutMs: STATEMENT_TIMEOUT_MS, connectTimeoutMs: CONNECT_TIMEOUT_MS, listenCheckMs: 200
  })
  // A poll interval no wake-up below could be mistaken for.
  const POLL_MS = 30_000
  const scheduler = rt.newScheduler({ pollIntervalMs: POLL_MS }, undefined, {
    db: handle.db, clock: systemClock, listen: (onWork) => handle.listen(WORK_CHANNEL, onWork)
  })
  let stopped = false
  t.teardown(async () => {
    proxy.blackHole(false)
    if (!stopped) await Promise.race([scheduler.stop(100), sleep(5000)])
    proxy.cutAll()
    await handle.close()
  })
  await scheduler.start()
  /** How long a new process's webhook waits for its call, once the worker is idle (at most 5 s). */
  const wakeUp = async () => {
    await sleep(1000)
    const before = rt.provider.calls.length
    const began = Date.now()
    await rt.start(webhook)
    while (rt.provider.calls.length === before && Date.now() - began < 5000) await sleep(10)
    return rt.provider.calls.length > before ? Date.now() - began : Infinity
  }
  const before = await wakeUp()
  t.ok(before < 2000, `a NOTIFY wakes the worker: called ${before} ms after the start`)

  proxy.blackHole(true)
  await sleep(2 * CONNECT_TIMEOUT_MS)
  proxy.blackHole(false)
  // Found lost within the check's interval and timeout, it is made again at the next try (every second).
  await sleep(1000 + CONNECT_TIMEOUT_MS)
  const after = await wakeUp()
  t.comment(`wake-up before the black hole ${before} ms, after it ${after} ms (poll interval ${POLL_MS} ms)`)
  // Before, the LISTEN connection stayed lost: new work waited for the poll interval, for good.
  t.ok(after < 2000, `after the black hole a NOTIFY wakes the worker again: called ${after} ms after the start`)

  // A stop during a black hole: the LISTEN connection's close waited for an answer that never came.
  proxy.blackHole(true)
  const GRACE_MS = 500
  const stop = await timed(() => Promise.race([scheduler.stop(GRACE_MS).then(() => 'stopped'), sleep(10_000).then(() => 'still stopping')]))
  stopped = stop.answer === 'stopped'
  t.comment(`stop during a black hole: ${stop.answer} after ${stop.ms} ms (grace ${GRACE_MS} ms)`)
  t.equal(stop.answer, 'stopped')
  // The grace, then the writes' cut-off (2 s), then the LISTEN connection's close (0.5 s at most).
  t.ok(stop.ms < GRACE_MS + 2000 + 500 + 1000, `the stop ends within its grace and cut-offs: ${stop.ms} ms`)
})

t.test('a worker stopped during a black hole its LISTEN check has not found yet: the stop is bounded all the same', async (t) => {
  const handle = openPostgres(proxy.url(rt.databaseUrl), {
    poolMax: 4, statementTimeoutMs: STATEMENT_TIMEOUT_MS, connectTimeoutMs: CONNECT_TIMEOUT_MS, listenCheckMs: 60_000
  })
  const scheduler = rt.newScheduler({ pollIntervalMs: 30_000 }, undefined, {
    db: handle.db, clock: systemClock, listen: (onWork) => handle.listen(WORK_CHANNEL, onWork)
  })
  t.teardown(async () => {
    proxy.blackHole(false)
    proxy.cutAll()
    await handle.close()
  })
  await scheduler.start()
  await sleep(500)
  proxy.blackHole(true)
  const GRACE_MS = 200
  // Before, the LISTEN connection's close waited for the server's answer to its Terminate, for good (or until
  // TCP gave up on it, minutes later): the process's hard limit (grace + 5 s) ended it with exit 1.
  const stop = await timed(() => Promise.race([scheduler.stop(GRACE_MS).then(() => 'stopped'), sleep(10_000).then(() => 'still stopping')]))
  t.comment(`stop during a black hole: ${stop.answer} after ${stop.ms} ms (grace ${GRACE_MS} ms)`)
  t.equal(stop.answer, 'stopped')
  t.ok(stop.ms < GRACE_MS + 2000 + 500 + 1000, `the stop ends within its grace and cut-offs: ${stop.ms} ms`)
})

t.test('calls in flight when the database falls into a black hole are recorded once it is back: each made and recorded once', async (t) => {
  const webhook = await rt.template([{ kind: 'webhook', name: 'Ask RideCo' }])
  rt.clock.set(new Date())
  rt.provider.always({ status: 200, body: 'ok', delayMs: 300 })
  const handle = openPostgres(proxy.url(rt.databaseUrl), { poolMax: 4, statementTimeoutMs: STATEMENT_TIMEOUT_MS, connectTimeoutMs: CONNECT_TIMEOUT_MS })
  const scheduler = rt.newScheduler({ pollIntervalMs: 200 }, undefined, { db: handle.db, clock: systemClock })
  t.teardown(async () => {
    proxy.blackHole(false)
    await scheduler.stop(1000)
    await handle.close()
  })
  const N = 10
  const ids: string[] = []
  for (let i = 0; i < N; i++) ids.push((await rt.start(webhook)).id)
  const calls = () => rt.provider.calls.filter((c) => ids.includes(c.query.processId!))
  await scheduler.start()
  while (calls().length < 3) await sleep(20)
  proxy.blackHole(true)
  await sleep(3000)
  proxy.blackHole(false)
  const back = Date.now()
  const succeeded = async () => (await rt.db.selectFrom('deliveries').select('id')
    .where('status', '=', 'succeeded').where('instance_id', 'in', ids).execute()).length
  while ((await succeeded()) < N && Date.now() - back < 20_000) await sleep(100)
  t.equal(await succeeded(), N, `all ${N} succeeded ${Date.now() - back} ms after the black hole ended`)
  t.equal(calls().length, N, 'each was called once')
  const attempts = await rt.db.selectFrom('delivery_attempts').innerJoin('deliveries', 'deliveries.id', 'delivery_attempts.delivery_id')
    .select('delivery_attempts.outcome').where('deliveries.instance_id', 'in', ids).execute()
  t.same(attempts.map((a) => a.outcome), Array(N).fill('succeeded'), 'one attempt each: nothing lost or repeated')
})

t.test('a LISTEN check the server answered while the event loop was busy is no loss: no reconnect, no extra pass of chores', async (t) => {
  // The least connect timeout the settings allow, and checks a second apart.
  const errors: string[] = []
  const handle = openPostgres(rt.databaseUrl, {
    poolMax: 1, statementTimeoutMs: STATEMENT_TIMEOUT_MS, connectTimeoutMs: 100, listenCheckMs: 1000, onError: (error) => errors.push(error.message)
  })
  const unlisten = await handle.listen('baton_test_busy_loop', () => {})
  t.teardown(async () => {
    await unlisten()
    await handle.close()
  })
  // A loop busy 300 ms at a time for 3.5 s: longer than the connect timeout, shorter than the checks' interval.
  const until = Date.now() + 3500
  while (Date.now() < until) {
    const busyUntil = Date.now() + 300
    while (Date.now() < busyUntil);
    // Only the next turn of the loop: a check sent in it finds the loop busy again before its answer is read.
    await new Promise((resolve) => setImmediate(resolve))
  }
  // A failed check's reconnect comes within the second after it.
  await sleep(1200)
  // Before, each check whose answer the busy loop held past the connect timeout dropped the connection,
  // and the reconnect woke the worker for a whole pass. (A first connect slower than 100 ms on a busy
  // machine is another error, and no check's.)
  t.same(errors.filter((message) => /^Query read timeout/.test(message)), [], 'no check given up on')
})
