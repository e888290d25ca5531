import { readFileSync } from 'node:fs'
import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { systemClock } from '../../src/adapters/clock.js'
import { createHttpClient } from '../../src/adapters/http-client.js'
import { createMailer, type Mailer } from '../../src/adapters/mailer.js'
import { openPostgres } from '../../src/db/connect.js'
import { loadConfig } from '../../src/config.js'
import { BatonMetrics } from '../../src/lib/metrics.js'
import { buildScheduler, WORK_CHANNEL } from '../../src/scheduler/build.js'
import { claimDeliveries } from '../../src/scheduler/claim-deliveries.js'
import { createScheduler, type Scheduler, type SchedulerSettings } from '../../src/scheduler/scheduler.js'
import { nextDue } from '../../src/scheduler/next-due.js'
import { databaseUrl } from '../helpers/database.js'
import type { Reply } from '../helpers/provider.js'
import { FAST_RETRIES, setupRuntime } from '../helpers/runtime.js'

// The long-running loop, in real time: the scheduler's clock is the system clock, and the app's test
// clock is set to the present before each process starts, so what the API queues is due at once.
const rt = await setupRuntime(t)
const { rows: [current] } = await sql<{ name: string }>`select current_database() as name`.execute(rt.db)
const database = openPostgres(databaseUrl(current!.name), { poolMax: 2 })
const http = createHttpClient({ maxBodyBytes: 65536, maxSockets: 16, userAgent: 'Baton/test', allowPrivateNetworks: true })
const mailer = createMailer({ smtpUrl: rt.smtp.url, mailDir: '', timeoutMs: 2000 })
const timers = new Set<NodeJS.Timeout>()
t.teardown(async () => {
  for (const timer of timers) clearTimeout(timer)
  http.close()
  mailer.close()
  await database.close()
})

const errors: unknown[] = []

/** A scheduler as `npm run worker` builds it: LISTEN on the work channel unless told not to. */
function loopScheduler(settings: Partial<SchedulerSettings>, options: { listen?: boolean; mailer?: Mailer; metrics?: BatonMetrics } = {}): Scheduler {
  return createScheduler({
    ...(options.metrics ? { metrics: options.metrics } : {}),
    db: rt.db,
    clock: systemClock,
    http,
    mailer: options.mailer ?? mailer,
    log: { info() {}, warn() {}, error: (obj) => errors.push(obj) },
    workerId: `loop-${Math.random().toString(36).slice(2, 8)}`,
    settings: {
      pollIntervalMs: 5000,
      batchSize: 100,
      concurrency: 16,
      leaseMs: 60_000,
      timeoutMs: 15_000,
      mailFrom: 'Baton <baton@example.com>',
      userAgent: 'Baton/test',
      policy: FAST_RETRIES,
      claimTtlMs: 900_000,
      ...settings
    },
    ...(options.listen === false ? {} : { listen: (onWork: () => void) => database.listen(WORK_CHANNEL, onWork) })
  })
}

const replies = new Map<string, Reply | (() => Promise<Reply>)>()
rt.provider.always((call) => {
  const reply = replies.get(call.query.stepId ?? '')
  return typeof reply === 'function' ? reply() : reply ?? { status: 200, body: 'ok' }
})

async function startWebhookProcess(name: string, reply?: Reply | (() => Promise<Reply>)) {
  const templateId = await rt.template([{ kind: 'webhook', name, refersTo: { property: true } }])
  rt.clock.set(new Date())
  const startedAt = Date.now()
  const instance = await rt.start(templateId)
  const stepId: string = instance.steps[0].id
  if (reply) replies.set(stepId, reply)
  return { instanceId: instance.id as string, stepId, startedAt }
}

const callsFor = (stepId: string) => rt.provider.calls.filter((c) => c.query.stepId === stepId)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function waitForCall(stepId: string, withinMs: number) {
  const until = Date.now() + withinMs
  while (callsFor(stepId).length === 0) {
    if (Date.now() > until) throw new Error(`no call for step ${stepId} within ${withinMs} ms`)
    await sleep(5)
  }
  return callsFor(stepId)[0]!
}

async function deliveryOf(stepId: string) {
  const list = await rt.api.get(`/v1/deliveries?stepId=${stepId}`)
  if (list.statusCode !== 200 || list.data.items.length !== 1) throw new Error(`expected one delivery for step ${stepId}: ${list.body}`)
  return list.data.items[0]
}

t.test('a NOTIFY wakes the sleeping loop: the provider is called well within the poll interval', async (t) => {
  const scheduler = loopScheduler({ pollIntervalMs: 5000 })
  await scheduler.start()
  t.teardown(() => scheduler.stop(1000))
  await sleep(300) // the loop has found nothing and sleeps for its 5 s poll interval

  const { instanceId, stepId, startedAt } = await startWebhookProcess('Valuation woken by NOTIFY')
  const call = await waitForCall(stepId, 4000)
  const lag = call.at - startedAt
  t.ok(lag < 1000, `called ${lag} ms after the process started, not after the 5 s poll interval`)
  t.ok(call.signatureValid)

  for (let i = 0; i < 200 && (await rt.instance(instanceId)).status !== 'completed'; i++) await sleep(10)
  t.equal((await rt.instance(instanceId)).status, 'completed', 'the outcome is recorded by the loop')
  await scheduler.stop(1000)
  t.same(errors, [])
})

t.test('the scheduler as npm start and npm run worker build it from the configuration calls with User-Agent: Baton/<the version in package.json>, and its apiClaim lasts 15 minutes', async (t) => {
  const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  const config = loadConfig({ DATABASE_URL: databaseUrl(current!.name), WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true', SMTP_URL: rt.smtp.url, LOG_LEVEL: 'silent' })
  const scheduler = buildScheduler(config, database, systemClock, { info() {}, warn() {}, error: (obj) => errors.push(obj) }, new BatonMetrics())
  t.teardown(() => scheduler.stop(1000))
  const { stepId } = await startWebhookProcess('Valuation by the built scheduler')
  await scheduler.runOnce()
  const call = await waitForCall(stepId, 4000)
  t.ok(call.signatureValid)
  t.equal(call.headers['user-agent'], `Baton/${version}`)
  t.equal(call.headers['idempotency-key'], call.query.deliveryId)
  // The apiClaim lasts API_CLAIM_TTL_MS, 15 minutes by default, from the call.
  const claim = rt.as(call.query.apiClaim!)
  const calledAt = Number(call.query.timestamp) * 1000
  rt.clock.set(new Date(calledAt + 15 * 60_000 - 2000))
  t.equal((await claim.get(`/v1/properties/${rt.propertyId}`)).statusCode, 200, 'the claim works until 15 minutes after the call')
  rt.clock.set(new Date(calledAt + 15 * 60_000 + 2000))
  t.equal((await claim.get(`/v1/properties/${rt.propertyId}`)).statusCode, 401, 'and has expired then')
  rt.clock.set(new Date())
  t.same(errors, [])
})

t.test('a claim a vanished worker left is taken over when its lease ends, not at the next poll interval (SCHEDULER_POLL_INTERVAL_MS up to 10 minutes)', async (t) => {
  const scheduler = loopScheduler({ pollIntervalMs: 600_000 })
  t.teardown(() => scheduler.stop(1000))
  const { stepId } = await startWebhookProcess('Valuation left by a vanished worker')
  const claimedAt = new Date()
  const claims = await claimDeliveries(rt.db, { workerId: 'vanished', now: claimedAt, leaseMs: 1500, limit: 10 })
  t.ok(claims.some((c) => c.stepId === stepId), 'the other worker claimed it, and was killed before its call')
  await scheduler.start()
  await sleep(500) // its first pass found the lease still running and nothing else due: it sleeps
  t.equal(callsFor(stepId).length, 0)

  const call = await waitForCall(stepId, 6000)
  const lag = call.at - (claimedAt.getTime() + 1500)
  t.ok(lag < 2000, `called ${lag} ms after the lease ended`)
  await scheduler.stop(2000)
  const attempts = await rt.db.selectFrom('delivery_attempts').select('outcome').where('delivery_id', '=', call.query.deliveryId!).orderBy('attempt_number').execute()
  t.same(attempts.map((a) => a.outcome), ['aborted', 'succeeded'], 'the vanished claim is logged as aborted, then the call succeeds')
  t.same(errors, [])
})

// A lease end the reap could not take (its row locked by another transaction, or the reap failing) stayed a
// due time in the past: the loop ran its chores every 50-200 ms for as long (a review's finding).
t.test('a lease end the reap cannot take is not due again: the loop sleeps instead of running its chores over and over', async (t) => {
  let passes = 0
  const metrics = new (class extends BatonMetrics {
    override leasesReaped(count: number): void {
      passes++
      super.leasesReaped(count)
    }
  })()
  const scheduler = loopScheduler({ pollIntervalMs: 600_000 }, { metrics })
  const { stepId } = await startWebhookProcess('Valuation whose claim is locked at its lease end')
  const [claim] = (await claimDeliveries(rt.db, { workerId: 'vanished', now: new Date(), leaseMs: 800, limit: 10 })).filter((c) => c.stepId === stepId)
  t.ok(claim, 'a vanished worker claimed it')
  let release!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  let locked!: () => void
  const holding = new Promise<void>((resolve) => { locked = resolve })
  const holder = database.db.transaction().execute(async (trx) => {
    await sql`select id from deliveries where id = ${claim!.id} for update`.execute(trx)
    locked()
    await released
  })
  t.teardown(async () => {
    release()
    await holder
    await scheduler.stop(1000)
  })
  await holding
  await scheduler.start()
  await sleep(1500) // the lease ended 0.8 s after the claim; the pass at its end could not take it
  const before = passes
  await sleep(1000)
  t.equal(passes - before, 0, `no chores pass in the second after (${passes} in all)`)
  t.equal(callsFor(stepId).length, 0, 'and no call: the row is still locked')
  t.same(errors, [])
})

t.test('without LISTEN the same loop sleeps its poll interval; wake() has the same effect as a NOTIFY', async (t) => {
  const scheduler = loopScheduler({ pollIntervalMs: 5000 }, { listen: false })
  await scheduler.start()
  t.teardown(() => scheduler.stop(1000))
  await sleep(1000) // time for its first pass even on a busy machine; it then sleeps until 5 s after the start

  const { stepId } = await startWebhookProcess('Valuation without LISTEN')
  await sleep(700)
  t.equal(callsFor(stepId).length, 0, 'no call while the loop sleeps: the quick call above came from the NOTIFY')

  const woken = Date.now()
  scheduler.wake()
  const call = await waitForCall(stepId, 4000)
  t.ok(call.at - woken < 1000, 'wake() starts it at once')
  await scheduler.stop(2000)
  t.equal((await deliveryOf(stepId)).status, 'succeeded')
})

t.test('a worker whose every place is taken by calls that hang still runs its chores on time: an automatic step and a deadline do not wait for the poll interval', async (t) => {
  let release = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  t.teardown(() => release())
  const hang = async (): Promise<Reply> => {
    await held
    return { status: 200, body: 'ok' }
  }
  // Another tenant's calls take both places and hold them (a host that hangs until the timeout).
  const hanging = [await startWebhookProcess('Hangs one', hang), await startWebhookProcess('Hangs two', hang)]
  const scheduler = loopScheduler({ concurrency: 2, pollIntervalMs: 10_000 })
  t.teardown(() => scheduler.stop(1000))
  await scheduler.start()
  for (const { stepId } of hanging) await waitForCall(stepId, 4000)
  await sleep(300) // the loop asleep with its places taken

  const mailed = (text: string) => rt.smtp.mails.find((m) => m.subject.includes(text))
  const automatic = await rt.template([
    { kind: 'email', name: 'Tell the controller', email: { mode: 'automatic', to: 'controller', subject: 'Full worker, automatic step', body: 'Sent.' } },
    { kind: 'writeValues', name: 'Mark it', refersTo: { property: true }, writeValues: { values: [{ record: 'property', field: 'marked', value: true }] } }
  ])
  rt.clock.set(new Date())
  const startedAt = Date.now()
  const instance = await rt.start(automatic)
  for (let i = 0; i < 300 && (await rt.instance(instance.id)).status !== 'completed'; i++) await sleep(10)
  const doneMs = Date.now() - startedAt
  t.equal((await rt.instance(instance.id)).status, 'completed', `both automatic steps done (${doneMs} ms)`)
  t.ok(mailed('Full worker, automatic step'), 'the automatic mail went out')
  t.ok(doneMs < 3000, `done ${doneMs} ms after the start, not at the poll 10 s later`)

  // A deadline that falls due while the places stay taken: its step's change announces it ahead.
  const task = await rt.template([{ kind: 'task', name: 'Full worker task', responsibility: { user: rt.worker.id }, deadlineDays: 1 }])
  const taskInstance = await rt.start(task)
  await sql`update instance_steps set deadline_at = now() + interval '1 second', start_at = start_at where instance_id = ${taskInstance.id}`.execute(rt.db)
  const dueAt = Date.now() + 1000
  for (let i = 0; i < 400 && !mailed('Full worker task'); i++) await sleep(10)
  const lateMs = Date.now() - dueAt
  t.ok(mailed('Full worker task'), `the deadline's mail went out (${lateMs} ms after the deadline)`)
  t.ok(lateMs < 2000, 'within two seconds of the deadline, not at the poll')
  t.same(hanging.map(({ stepId }) => callsFor(stepId).length), [1, 1], 'the hanging calls are still open, each once')
  release()
  await scheduler.stop(2000)
  t.same(errors, [])
})

t.test('while outcomes cannot be written, calls go on until three times SCHEDULER_CONCURRENCY wait, and resume once they are written', async (t) => {
  const CONCURRENCY = 2
  const templateId = await rt.template([{ kind: 'webhook', name: 'Valuation held back', refersTo: { property: true } }])
  rt.clock.set(new Date())
  const started: { id: string; steps: { id: string }[] }[] = []
  for (let i = 0; i < 20; i++) started.push(await rt.start(templateId))
  const stepIds = new Set(started.map((instance) => instance.steps[0]!.id))
  const calls = () => rt.provider.calls.filter((c) => stepIds.has(c.query.stepId ?? '')).length
  const scheduler = loopScheduler({ concurrency: CONCURRENCY })
  t.teardown(() => scheduler.stop(1000))
  // Another transaction holds the processes' rows: an outcome batch waits for their lock.
  await database.db.connection().execute(async (connection) => {
    await sql`begin`.execute(connection)
    await sql`select 1 from process_instances where id in (${sql.join(started.map((i) => i.id))}) for update`.execute(connection)
    try {
      await scheduler.start()
      for (let i = 0; i < 400 && calls() < 4 * CONCURRENCY; i++) await sleep(5)
      await sleep(300) // would more calls start?
      t.equal(calls(), 4 * CONCURRENCY, 'the calls whose outcomes wait (three times the concurrency), one more round, then none')
    } finally {
      await sql`rollback`.execute(connection)
    }
  })
  for (let i = 0; i < 600 && calls() < 20; i++) await sleep(10)
  t.equal(calls(), 20, 'once the outcomes are written, the rest are called, each once')
  const statuses = async () => new Set(await Promise.all(started.map(async (instance) => (await rt.instance(instance.id)).status as string)))
  for (let i = 0; i < 200 && (await statuses()).has('running'); i++) await sleep(10)
  t.same([...await statuses()], ['completed'], 'every process completed')
  await scheduler.stop(2000)
  t.same(errors, [])
})

t.test('stop(grace) lets a call in flight finish and records it', async (t) => {
  // The process starts before the scheduler does: its reply is set by then (a running scheduler could
  // call the provider between the start's commit and the reply being set).
  const { instanceId, stepId } = await startWebhookProcess('Valuation finishing during shutdown', { status: 200, body: 'done at last', delayMs: 300 })
  const scheduler = loopScheduler({})
  await scheduler.start()
  await waitForCall(stepId, 3000)

  const stopping = Date.now()
  await scheduler.stop(2000)
  const took = Date.now() - stopping
  t.ok(took >= 200 && took < 2000, `stop waited ${took} ms for the call, not the whole grace period`)

  const delivery = await deliveryOf(stepId)
  t.equal(delivery.status, 'succeeded', 'the outcome was recorded before stop returned')
  t.same(delivery.attempts.map((a: { outcome: string; statusCode: number; responseBody: string }) => [a.outcome, a.statusCode, a.responseBody]),
    [['succeeded', 200, 'done at last']])
  const view = await rt.instance(instanceId)
  t.equal(view.steps[0].state, 'done')
  t.equal(view.status, 'completed')
  t.equal(callsFor(stepId).length, 1)
  t.same(errors, [])
})

// A mail batch whose SMTP server does not answer waited out its timeouts (15 s a mail) before the grace
// even began: past the process's hard limit (grace + 5 s), which exited 1 without cutting off its calls.
t.test('stop(grace) does not wait past the grace for a mail batch whose SMTP server does not answer', async (t) => {
  let sends = 0
  const hung: Mailer = {
    send: () => {
      sends += 1
      return new Promise((_resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('Greeting never received')), 10_000)
        timers.add(timer)
      })
    },
    close() {}
  }
  await sql`insert into outbox_mails (tenant_id, id, dedupe_key, kind, to_address, subject, body)
    values (${rt.tenant.id}, gen_random_uuid(), 'hung-smtp', 'deadlineMissed', 'controller@example.com', 'Held by the SMTP server', 'body')`.execute(rt.db)
  t.teardown(async () => { await sql`delete from outbox_mails where dedupe_key = 'hung-smtp'`.execute(rt.db) })
  const scheduler = loopScheduler({}, { mailer: hung })
  await scheduler.start()
  for (let i = 0; i < 300 && sends === 0; i++) await sleep(10)
  t.equal(sends, 1, 'the mail is being sent')

  const stopping = Date.now()
  await scheduler.stop(300)
  const took = Date.now() - stopping
  t.ok(took < 2000, `stop returned after ${took} ms: about the grace, not the SMTP server's timeout`)
})

t.test('stop(grace) cuts off a call that outlasts the grace period: an aborted attempt, counted, due again at once', async (t) => {
  const hold = () => new Promise<Reply>((resolve) => {
    const timer = setTimeout(() => resolve({ status: 200, body: 'too late' }), 10_000)
    timers.add(timer)
  })
  const { instanceId, stepId } = await startWebhookProcess('Valuation held past shutdown', hold)
  const scheduler = loopScheduler({})
  await scheduler.start()
  await waitForCall(stepId, 3000)
  const running = await rt.instance(instanceId)
  t.equal(running.steps[0].state, 'running', 'the call is in flight')

  const stopping = Date.now()
  await scheduler.stop(200)
  const took = Date.now() - stopping
  t.ok(took >= 150 && took < 2000, `stop returned after ${took} ms: the grace period, not the provider's 10 s`)

  const delivery = await deliveryOf(stepId)
  t.equal(delivery.status, 'pending', 'released for another worker')
  t.equal(delivery.attemptCount, 1, 'the call left Baton, so it counts as an attempt')
  t.same(delivery.attempts.map((a: { attempt: number; outcome: string }) => [a.attempt, a.outcome]), [[1, 'aborted']], 'and is logged as aborted')
  t.match(delivery.attempts[0].error, /shut down before the provider answered/)
  t.ok(new Date(delivery.nextAttemptAt).getTime() <= Date.now(), 'due again at once')
  const { rows } = await sql<{ lease_owner: string | null; lease_expires_at: Date | null; attempt_count: number }>`
    select lease_owner, lease_expires_at, attempt_count from deliveries where id = ${delivery.id}
  `.execute(rt.db)
  t.same(rows, [{ lease_owner: null, lease_expires_at: null, attempt_count: 1 }], 'the lease is given up')
  const view = await rt.instance(instanceId)
  t.equal(view.steps[0].state, 'due', 'the step is due again')
  t.equal(view.status, 'running')
  t.same(errors, [])

  // Another worker picks it up at once and delivers it.
  replies.delete(stepId)
  const next = loopScheduler({})
  await next.start()
  for (let i = 0; i < 300 && (await rt.instance(instanceId)).status !== 'completed'; i++) await sleep(10)
  await next.stop(1000)
  t.equal((await rt.instance(instanceId)).status, 'completed', 'a second worker completes it')
  t.same((await deliveryOf(stepId)).attempts.map((a: { attempt: number; outcome: string }) => [a.attempt, a.outcome]), [[1, 'aborted'], [2, 'succeeded']],
    'the resent call is attempt 2')
})

t.test('a tenant being deleted sets no due time: its delivery and mail, which no claim takes, would keep the loop claiming every 50 ms', async (t) => {
  const going = await rt.newTenant({ name: 'Going GmbH' })
  // Before anything else queued in this file, the staying tenant's a day after the going tenant's.
  const [first, second] = [new Date('2001-01-01T00:00:00Z'), new Date('2001-01-02T00:00:00Z')]
  for (const [tenantId, at] of [[going.id, first], [rt.tenant.id, second]] as const) {
    await sql`insert into deliveries (tenant_id, id, service_id, source, next_attempt_at)
      values (${tenantId}, gen_random_uuid(), ${rt.serviceId}, 'trigger', ${at})`.execute(rt.db)
    await sql`insert into outbox_mails (tenant_id, id, dedupe_key, kind, to_address, subject, body, next_attempt_at)
      values (${tenantId}, gen_random_uuid(), ${`due ${tenantId}`}, 'stepSkipped', 'clara@example.com', 'Skipped', 'A step was skipped.', ${at})`.execute(rt.db)
  }
  t.same(await nextDue(rt.db), { delivery: first, chores: first }, 'the going tenant\'s are due first')
  // As a deletion leaves the tenant while it runs, or once it was cut off.
  await sql`update tenants set deleting_since = now() where id = ${going.id}`.execute(rt.db)
  t.same(await nextDue(rt.db), { delivery: second, chores: second }, 'once it is marked, the other tenant\'s are the next due')
  t.equal((await rt.operator.delete(`/v1/tenants/${going.id}`)).statusCode, 204)
  await sql`delete from deliveries where tenant_id = ${rt.tenant.id} and next_attempt_at = ${second}`.execute(rt.db)
  await sql`delete from outbox_mails where tenant_id = ${rt.tenant.id} and next_attempt_at = ${second}`.execute(rt.db)
})
