// The database goes away under a running Baton: connections cut mid-query, refused, or frozen. A
// second app and a scheduler reach the test's database through a fault-injecting TCP proxy, so the
// shared Postgres server is never touched. Nothing may crash, every answer is a 2xx that committed
// or a 503 problem with Retry-After, and all comes back by itself.
import { sql } from '../../src/db/kysely.js'
import pg from 'pg'
import t, { type Test } from 'tap'
import { systemClock } from '../../src/adapters/clock.js'
import type { Response } from '../helpers/app.js'
import { appBehindFaultProxy } from '../helpers/faulty-app.js'
import { FAST_RETRIES, setupRuntime, type InstanceView } from '../helpers/runtime.js'

const STATEMENT_TIMEOUT_MS = 1000

const rt = await setupRuntime(t)
// No rate limit: the load below starts as many processes as it can (thousands a second on a fast machine).
const { proxy, db: faultyDb, api, operator } = await appBehindFaultProxy(t, rt, { poolMax: 8, statementTimeoutMs: STATEMENT_TIMEOUT_MS, env: { RATE_LIMIT_MAX: '0' } })
const templateId = await rt.template([{ kind: 'task', name: 'Call the owner' }])
const start = () => api.post('/v1/process-instances', { templateId, responsibleUserId: rt.worker.id, propertyId: rt.propertyId })
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function checkUnavailable(t: Test, response: Response): void {
  t.equal(response.statusCode, 503)
  t.match(response.headers['content-type'], /^application\/problem\+json/)
  t.equal(response.headers['retry-after'], '2')
  t.equal(response.data.status, 503)
}

async function instanceExists(id: string): Promise<boolean> {
  return (await rt.db.selectFrom('process_instances').select('id').where('id', '=', id).executeTakeFirst()) !== undefined
}

/** A process's delivery, as the database has it now (read beside the proxy). */
async function deliveryOf(instanceId: string) {
  return (await sql<{ id: string; status: string; fence: number; attempt_count: number; lease_owner: string | null }>`
    select id, status, fence, attempt_count, lease_owner from deliveries where instance_id = ${instanceId}`.execute(rt.db)).rows[0]!
}

/** The claim's statement, which the proxy watches for. */
const CLAIM = /set status = 'running', lease_owner/

t.test('connections cut again and again under load: every answer is 201 or 503, and every 201 committed', async (t) => {
  const CUTS = 6
  const answers: Response[] = []
  let running = true
  const load = Array.from({ length: 4 }, async () => {
    while (running) answers.push(await start())
  })
  for (let cut = 0; cut < CUTS; cut++) {
    await sleep(400)
    proxy.cutAll()
  }
  running = false
  await Promise.all(load)
  const created = answers.filter((a) => a.statusCode === 201)
  const unavailable = answers.filter((a) => a.statusCode === 503)
  t.comment(`${answers.length} starts during ${CUTS} cuts: ${created.length} created, ${unavailable.length} answered 503`)
  t.same(answers.filter((a) => a.statusCode !== 201 && a.statusCode !== 503).map((a) => `${a.statusCode} ${a.body}`), [], 'no other answer')
  t.ok(unavailable.length > 0, 'the cuts hit requests in flight')
  t.ok(created.length > 0, 'and requests between the cuts went through')
  for (const answer of unavailable) checkUnavailable(t, answer)
  const missing = []
  for (const answer of created) if (!(await instanceExists(answer.data.id))) missing.push(answer.data.id)
  t.same(missing, [], 'every 201 names a process that exists')
  t.equal((await start()).statusCode, 201, 'and the next start works')
})

t.test('a database that refuses connections: 503 and not ready; ready again within 5 s of its return', async (t) => {
  await proxy.refuse(true)
  proxy.cutAll()
  checkUnavailable(t, await start())
  const ready = await api.get('/health/ready')
  checkUnavailable(t, ready)
  t.equal(ready.data.detail, 'The database is not reachable.')
  await proxy.refuse(false)
  const back = Date.now()
  let status = 0
  while (status !== 200 && Date.now() - back < 5000) status = (await api.get('/health/ready')).statusCode
  t.equal(status, 200, `ready again ${Date.now() - back} ms after the database came back`)
  t.equal((await start()).statusCode, 201)
})

// The process's own figures (memory, event loop, its calls) are what an outage is watched by: the scrape
// answered 503 while the database was away.
t.test('/metrics while the database is away: the process\'s figures without the queue gauges, and baton_database_up 0', async (t) => {
  const scrape = async () => {
    const answer = await operator.get('/metrics')
    return { status: answer.statusCode, text: answer.body }
  }
  const up = await scrape()
  t.equal(up.status, 200)
  t.match(up.text, /^baton_database_up 1$/m)
  t.match(up.text, /^baton_deliveries\{status="pending"\} \d+$/m)
  await proxy.refuse(true)
  proxy.cutAll()
  const away = await scrape()
  await proxy.refuse(false)
  t.equal(away.status, 200, away.text.slice(0, 300))
  t.match(away.text, /^baton_database_up 0$/m)
  t.match(away.text, /^process_resident_memory_bytes \d+/m, 'the process\'s own figures')
  t.match(away.text, /^# TYPE baton_webhook_calls_total counter$/m, 'and Baton\'s counters')
  t.notMatch(away.text, /^baton_(deliveries|steps|outbox_unsent|delivery_oldest_due_seconds)\b/m, 'no queue gauge, rather than a stale one')
  t.notMatch(away.text, /^# (HELP|TYPE) baton_deliveries /m)
  const back = Date.now()
  let again = await scrape()
  while (!/^baton_database_up 1$/m.test(again.text) && Date.now() - back < 5000) again = await scrape()
  t.match(again.text, /^baton_deliveries\{status="pending"\} \d+$/m, 'the gauges again once it is back')
})

t.test('a database that stops answering: 503 after the statement timeout, not a hang', async (t) => {
  await start()
  proxy.hang(true)
  const began = Date.now()
  const answer = await start()
  const took = Date.now() - began
  proxy.hang(false)
  proxy.cutAll()
  checkUnavailable(t, answer)
  t.ok(took < STATEMENT_TIMEOUT_MS + 2000 + 1500, `answered in ${took} ms (statement timeout ${STATEMENT_TIMEOUT_MS} ms, client margin 2000 ms)`)
  const readyBegan = Date.now()
  proxy.hang(true)
  checkUnavailable(t, await api.get('/health/ready'))
  proxy.hang(false)
  proxy.cutAll()
  t.ok(Date.now() - readyBegan < 2500, 'the readiness probe answers within its own 2 s')
  t.equal((await start()).statusCode, 201, 'and all is well again')
})

t.test('a start whose connections are cut right after its write committed still answers 201', async (t) => {
  // The start writes in one statement, outside BEGIN…COMMIT: its commit is that statement's end.
  const fault = proxy.cutAfterNextCommit(500, /insert into process_instances/)
  const answer = await start()
  await fault
  t.equal(answer.statusCode, 201, answer.body)
  t.ok(await instanceExists(answer.data.id), 'and the process exists')
  t.equal(answer.data.steps[0].state, 'due', 'the answer shows what committed')
})

t.test('the scheduler rides out an outage: every call is made once and recorded once', async (t) => {
  const webhook = await rt.template([{ kind: 'webhook', name: 'Ask ValueCo' }])
  rt.clock.set(new Date())
  rt.provider.always({ status: 200, body: 'ok', delayMs: 300 })
  const warnings: unknown[] = []
  const log = { info() {}, warn: (o: object) => warnings.push(o), error: (o: object) => warnings.push(o) }
  const scheduler = rt.newScheduler({ pollIntervalMs: 200 }, log, { db: faultyDb, clock: systemClock })
  const N = 10
  for (let i = 0; i < N; i++) await rt.start(webhook)
  await scheduler.start()
  t.teardown(() => scheduler.stop(1000))
  while (rt.provider.calls.length < 3) await sleep(20)
  // The database goes away while calls are in flight, and stays away for a second.
  await proxy.refuse(true)
  proxy.cutAll()
  await sleep(1000)
  await proxy.refuse(false)
  const back = Date.now()
  const succeeded = async () => (await rt.db.selectFrom('deliveries').select('id').where('status', '=', 'succeeded').execute()).length
  while ((await succeeded()) < N && Date.now() - back < 20_000) await sleep(100)
  t.equal(await succeeded(), N, `all ${N} deliveries succeeded ${Date.now() - back} ms after the database came back`)
  t.equal(rt.provider.calls.length, N, 'each was called once')
  const attempts = await rt.db.selectFrom('delivery_attempts').select(['outcome']).execute()
  t.same(attempts.map((a) => a.outcome), Array(N).fill('succeeded'), 'one attempt each, all succeeded: nothing was lost or repeated')
  t.ok(warnings.length > 0, 'the outage was logged')
})

t.test('a claim whose answer the connection lost: its deliveries go back once the database answers, not when their lease ends, and are called once', async (t) => {
  const webhook = await rt.template([{ kind: 'webhook', name: 'Ask MeasureCo' }])
  rt.provider.always({ status: 200, body: 'ok' })
  // One attempt: before, the reaper counted the call never made as an aborted attempt, and the step failed uncalled.
  const scheduler = rt.newScheduler({ policy: { ...FAST_RETRIES, maxAttempts: 1 } }, undefined, { db: faultyDb })
  const instance = await rt.start(webhook)
  rt.clock.set(new Date(Date.now() + 1000))
  const delivery = () => deliveryOf(instance.id)
  // The claim commits, and its answer is lost with the connection.
  const fault = proxy.cutAfterNextCommit(300, CLAIM, { loseAnswer: true })
  await t.rejects(scheduler.runOnce(), 'the pass met the cut')
  await fault
  const after = await delivery()
  t.match(after, { status: 'running' }, 'the claim had committed')
  await scheduler.runOnce()
  const { id } = await delivery()
  t.equal(rt.provider.calls.filter((c) => c.query.deliveryId === id).length, 1, 'called once, at the next pass')
  t.match(await delivery(), { status: 'succeeded' })
  const attempts = await rt.db.selectFrom('delivery_attempts').select('outcome').where('delivery_id', '=', id).execute()
  t.same(attempts.map((a) => a.outcome), ['succeeded'], 'one attempt, no aborted one for the claim that was lost')
})

t.test('a worker told to stop after a claim whose answer the connection lost gives its deliveries back uncounted, not when their lease ends', async (t) => {
  const webhook = await rt.template([{ kind: 'webhook', name: 'Ask StopCo' }])
  const scheduler = rt.newScheduler({}, undefined, { db: faultyDb })
  const instance = await rt.start(webhook)
  rt.clock.advance(1000)
  const delivery = () => deliveryOf(instance.id)
  const fault = proxy.cutAfterNextCommit(300, CLAIM, { loseAnswer: true })
  await t.rejects(scheduler.runOnce(), 'the pass met the cut')
  await fault
  t.match(await delivery(), { status: 'running' }, 'the claim had committed')
  // A deploy's SIGTERM before the next pass: before, the deliveries waited for their lease to end, and the
  // reaper counted an aborted attempt for a call never made.
  await scheduler.stop(1000)
  t.match(await delivery(), { status: 'pending', attempt_count: 0, lease_owner: null }, 'back in the queue, no attempt counted')
  const step = await rt.instance(instance.id)
  t.equal(step.steps[0].state, 'due', 'its step due again')
  t.equal(rt.provider.calls.filter((c) => c.query.processId === instance.id).length, 0, 'not called')
  await rt.newScheduler().runOnce()
  t.equal(rt.provider.calls.filter((c) => c.query.processId === instance.id).length, 1, 'until the next worker\'s pass, once')
})

t.test('a lost claim made at the same instant as a claim whose call is still in flight gives nothing back: that call is not made twice', async (t) => {
  const webhook = await rt.template([{ kind: 'webhook', name: 'Ask SameCo' }])
  // One clock for both claims (the test's, standing still): their leases end at the same instant, and the
  // rows a lost claim leased cannot be told from those of the claim whose call is in flight.
  const scheduler = rt.newScheduler({ timeoutMs: 30_000 }, undefined, { db: faultyDb })
  const first = [await rt.start(webhook), await rt.start(webhook)]
  rt.clock.advance(1000)
  const ids = await Promise.all(first.map(async (instance) => (await deliveryOf(instance.id)).id))
  let release = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  t.teardown(() => release())
  let fault: Promise<void> | undefined
  let later: InstanceView | undefined
  let answered = false
  rt.provider.always(async (call) => {
    if (!ids.includes(call.query.deliveryId!) || answered) {
      await held
      return { status: 200, body: 'ok' }
    }
    // The first call answers at once, and the pass claims again: a new step due, and that claim's answer lost.
    answered = true
    fault = proxy.cutAfterNextCommit(300, CLAIM, { loseAnswer: true })
    later = await rt.start(webhook)
    return { status: 200, body: 'ok' }
  })
  await t.rejects(scheduler.runOnce(), 'the pass met the cut')
  await fault
  const calls = (id: string) => rt.provider.calls.filter((c) => c.query.deliveryId === id).length
  t.same(ids.map(calls), [1, 1], 'the first claim\'s two calls were made, one of them still in flight')
  t.match(await deliveryOf(later!.id), { status: 'running' }, 'the lost claim had committed')

  // The held call is answered only once the pass has claimed: its take-back of the lost claim comes first.
  const claimed = proxy.nextStatement(CLAIM)
  const next = scheduler.runOnce()
  await claimed
  release()
  await next
  t.same(ids.map(calls), [1, 1], 'each call of the first claim was made once: none of its rows went back with the lost claim')
  t.equal(calls((await deliveryOf(later!.id)).id), 0, 'the lost claim\'s delivery waits for its lease to end')
  // Its lease over, the reaper hands it back (counting an attempt: the claim's answer is all it knows of), and it is called.
  rt.clock.advance(61_000)
  await scheduler.runOnce()
  rt.clock.advance(24 * 3_600_000)
  await scheduler.runOnce()
  t.equal(calls((await deliveryOf(later!.id)).id), 1, 'and is then called once')
})

t.test('the mail pump rides out an outage: a mail the server took while the database was away is marked sent once it is back, not sent again', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Sign the listing', deadlineDays: 1 }])
  await rt.start(templateId)
  rt.clock.advance(25 * 3_600_000)
  const scheduler = rt.newScheduler({}, undefined, { db: faultyDb })
  // The server has the mail; before it answers the final dot, the database goes away for a second.
  let back: Promise<void> = Promise.resolve()
  rt.smtp.beforeAnswer = async () => {
    rt.smtp.beforeAnswer = undefined
    await proxy.refuse(true)
    proxy.cutAll()
    back = sleep(1000).then(() => proxy.refuse(false))
  }
  t.teardown(() => { rt.smtp.beforeAnswer = undefined })
  // What else the pass does meets the outage as it comes; the mail is what this test follows.
  await scheduler.runOnce().catch(() => {})
  await back
  const about = () => rt.smtp.mails.filter((m) => m.subject.includes('"Sign the listing"'))
  t.equal(about().length, 1, 'the mail went out')
  const row = async () => (await sql<{ sent_at: Date | null; lease_expires_at: Date | null }>`
    select sent_at, lease_expires_at from outbox_mails where subject like '%"Sign the listing"%'`.execute(rt.db)).rows
  t.match(await row(), [{ sent_at: Date, lease_expires_at: null }], 'marked sent once the database answered again')

  // Before, the mark was lost with the connection: the mail went out again when its lease of two minutes ran out.
  rt.clock.advance(5 * 60_000)
  await scheduler.runOnce()
  t.equal(about().length, 1, 'and not sent again')
})

t.test('a worker told to stop while the database is away still marks the mails the server took, once the database is back within its grace', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Measure the flat', deadlineDays: 1 }])
  await rt.start(templateId)
  const scheduler = rt.newScheduler({ pollIntervalMs: 100 }, undefined, { db: faultyDb, clock: systemClock })
  await sql`update instance_steps set deadline_at = now() - interval '1 hour' where name = 'Measure the flat'`.execute(rt.db)
  // The server has the mail; before it answers the final dot, the database goes away for a second and the
  // worker is told to stop (a deploy's SIGTERM), with a grace of five.
  let stopped: Promise<void> | undefined
  let back: Promise<void> = Promise.resolve()
  rt.smtp.beforeAnswer = async () => {
    rt.smtp.beforeAnswer = undefined
    await proxy.refuse(true)
    proxy.cutAll()
    stopped = scheduler.stop(5000)
    back = sleep(1000).then(() => proxy.refuse(false))
  }
  t.teardown(() => { rt.smtp.beforeAnswer = undefined })
  await scheduler.start()
  const about = () => rt.smtp.mails.filter((m) => m.subject.includes('"Measure the flat"'))
  while (!stopped) await sleep(20)
  await stopped
  await back
  t.equal(about().length, 1, 'the mail went out')
  const row = async () => (await sql<{ sent_at: Date | null; lease_expires_at: Date | null }>`
    select sent_at, lease_expires_at from outbox_mails where subject like '%"Measure the flat"%'`.execute(rt.db)).rows
  // Before, the stop gave the mark up at once: the mail went out again when its lease of two minutes ran out.
  t.match(await row(), [{ sent_at: Date, lease_expires_at: null }], 'marked sent before the worker stopped')
  rt.clock.set(new Date(Date.now() + 5 * 60_000))
  await rt.newScheduler().runOnce()
  t.equal(about().length, 1, 'and not sent again')
})

// The pump logged each failure as an error ("scheduler chore failed"), where the other chores warn at most every few seconds.
t.test('the mail pump behind a lock held past the statement timeout: a warning now and then, not an error each pass', async (t) => {
  const holder = new pg.Client({ connectionString: rt.databaseUrl })
  await holder.connect()
  t.teardown(() => holder.end())
  await holder.query('begin')
  await holder.query('lock table outbox_mails in access exclusive mode')
  const lines: { level: string; chore?: string; msg?: string }[] = []
  const log = {
    info() {},
    warn: (o: { chore?: string }, msg?: string) => lines.push({ level: 'warn', ...(o.chore ? { chore: o.chore } : {}), ...(msg ? { msg } : {}) }),
    error: (o: { chore?: string }, msg?: string) => lines.push({ level: 'error', ...(o.chore ? { chore: o.chore } : {}), ...(msg ? { msg } : {}) })
  }
  const scheduler = rt.newScheduler({ pollIntervalMs: 100 }, log, { db: faultyDb, clock: systemClock })
  await scheduler.start()
  await sleep(3 * STATEMENT_TIMEOUT_MS + 500)
  await holder.query('commit')
  await scheduler.stop(2000)
  const pump = lines.filter((l) => l.chore === 'sendQueuedMail')
  t.ok(pump.length > 0, `the pump's waits were logged: ${JSON.stringify(pump)}`)
  t.same(pump.filter((l) => l.level === 'error'), [], 'none as an error')
})

t.test('a migration that changes a table under prepared statements: each stale connection answers 503 once, then is replaced', async (t) => {
  const started = await start()
  for (let i = 0; i < 8; i++) t.equal((await api.get(`/v1/process-instances/${started.data.id}`)).statusCode, 200)
  await sql`alter table process_instances add column test_extra integer`.execute(rt.db)
  t.teardown(async () => { await sql`alter table process_instances drop column test_extra`.execute(rt.db) })
  const answers: number[] = []
  for (let i = 0; i < 20; i++) answers.push((await api.get(`/v1/process-instances/${started.data.id}`)).statusCode)
  t.ok(answers.every((s) => s === 200 || s === 503), `only 200 or 503: ${answers.join(' ')}`)
  t.ok(answers.filter((s) => s === 503).length <= 8, 'at most one 503 per pooled connection')
  t.equal(answers.at(-1), 200, 'and then the answers are good again')
})
