import t from 'tap'
import { createHttpClient } from '../../src/adapters/http-client.js'
import { sql } from '../../src/db/kysely.js'
import { openPostgres, type DB } from '../../src/db/connect.js'
import { startFaultProxy } from '../../scripts/drills/fault-proxy.js'
import { databaseUrl } from '../helpers/database.js'
import { claimDeliveries } from '../../src/scheduler/claim-deliveries.js'
import { loadClaimKey } from '../../src/modules/auth/claim-key.js'
import { reapExpiredLeases } from '../../src/scheduler/reap-expired-leases.js'
import { releaseDelivery } from '../../src/scheduler/delivery-repository.js'
import { OutcomeBatcher } from '../../src/scheduler/outcome-batcher.js'
import { recordOutcomes, type AttemptRecord } from '../../src/scheduler/record-outcome.js'
import type { ClaimedDelivery } from '../../src/scheduler/claim-deliveries.js'
import { DEFAULT_RETRY_POLICY } from '../../src/scheduler/retry-policy.js'
import type { ReceivedCall, Reply } from '../helpers/provider.js'
import { FAST_RETRIES, setupRuntime } from '../helpers/runtime.js'

const SECOND = 1000
/** One attempt's outcome, recorded as the scheduler's batches record theirs. */
const recordOutcome = async (db: DB, record: AttemptRecord, now: Date) => (await recordOutcomes(db, [record], now))[0]

// One runtime for the whole file (a database, a provider, an SMTP server): each test starts its own
// process and scripts the provider's answers for its own step, so the tests do not see each other.
const rt = await setupRuntime(t)
const scripts = new Map<string, (Reply | ((call: ReceivedCall) => Reply))[]>()
rt.provider.always((call) => {
  const next = scripts.get(call.query.stepId ?? '')?.shift() ?? { status: 200, body: 'ok' }
  return typeof next === 'function' ? next(call) : next
})

/** Starts a process whose only step is a webhook; the provider answers its calls with `replies`, then 200. */
async function webhookStep(name: string, replies: (Reply | ((call: ReceivedCall) => Reply))[] = []) {
  const templateId = await rt.template([{ kind: 'webhook', name, refersTo: { property: true } }])
  const instance = await rt.start(templateId)
  const step = instance.steps[0]
  scripts.set(step.id, replies)
  return { instanceId: instance.id as string, stepId: step.id as string, deliveryId: step.delivery.id as string }
}

const callsFor = (stepId: string) => rt.provider.calls.filter((c) => c.query.stepId === stepId)

async function deliveryOf(stepId: string) {
  const list = await rt.api.get(`/v1/deliveries?stepId=${stepId}`)
  if (list.statusCode !== 200 || list.data.items.length !== 1) throw new Error(`expected one delivery for step ${stepId}: ${list.body}`)
  return list.data.items[0]
}

async function stepState(instanceId: string): Promise<string> {
  return (await rt.instance(instanceId)).steps[0].state
}

const at = (base: Date, ms: number) => new Date(base.getTime() + ms).toISOString()

t.test('503 twice then 200: retried on the backoff schedule, every attempt logged, one idempotency key', async (t) => {
  const bigBody = 'x'.repeat(10 * 1024)
  const { instanceId, stepId, deliveryId } = await webhookStep('Valuation 503 503 200', [
    { status: 503, body: bigBody },
    { status: 503, body: 'still busy', headers: { 'content-type': 'text/plain' } }
  ])
  const [firstDelay, secondDelay] = DEFAULT_RETRY_POLICY.scheduleMs as [number, number]
  t.equal(FAST_RETRIES.jitter, 0, 'the fixture has no jitter, so times are exact')

  const t0 = rt.clock.now()
  let run = await rt.scheduler.runOnce()
  t.equal(run.deliveries, 1)
  let delivery = await deliveryOf(stepId)
  t.equal(delivery.status, 'pending')
  t.equal(delivery.attemptCount, 1)
  t.equal(delivery.lastStatusCode, 503)
  t.equal(delivery.nextAttemptAt, at(t0, firstDelay), `the first retry waits ${firstDelay} ms`)
  t.equal(await stepState(instanceId), 'due', 'a step waiting for a retry is due again, not running')

  rt.clock.advance(firstDelay - SECOND)
  run = await rt.scheduler.runOnce()
  t.equal(run.deliveries, 0, 'nothing before the backoff has passed')
  t.equal(callsFor(stepId).length, 1)

  rt.clock.advance(SECOND)
  const t1 = rt.clock.now()
  run = await rt.scheduler.runOnce()
  t.equal(run.deliveries, 1, 'attempt 2 once the backoff has passed')
  delivery = await deliveryOf(stepId)
  t.equal(delivery.status, 'pending')
  t.equal(delivery.attemptCount, 2)
  t.equal(delivery.nextAttemptAt, at(t1, secondDelay), `the second retry waits ${secondDelay} ms`)

  rt.clock.advance(secondDelay - SECOND)
  t.equal((await rt.scheduler.runOnce()).deliveries, 0)
  rt.clock.advance(SECOND)
  const t2 = rt.clock.now()
  run = await rt.scheduler.runOnce()
  t.equal(run.deliveries, 1, 'attempt 3')

  delivery = await deliveryOf(stepId)
  t.equal(delivery.id, deliveryId)
  t.equal(delivery.status, 'succeeded')
  t.equal(delivery.nextAttemptAt, null)
  t.equal(delivery.finishedAt, t2.toISOString())
  t.equal(await stepState(instanceId), 'done')
  t.equal((await rt.instance(instanceId)).status, 'completed')

  const attempts = delivery.attempts
  t.same(attempts.map((a: { attempt: number; outcome: string; statusCode: number; error: string | null }) => [a.attempt, a.outcome, a.statusCode, a.error]),
    [[1, 'retry', 503, null], [2, 'retry', 503, null], [3, 'succeeded', 200, null]])
  t.same(attempts.map((a: { startedAt: string }) => a.startedAt), [t0.toISOString(), t1.toISOString(), t2.toISOString()],
    'each attempt starts at the time the previous one scheduled')
  for (const attempt of attempts) t.ok(Number.isInteger(attempt.durationMs) && attempt.durationMs >= 0, 'durationMs is logged')
  t.equal(attempts[0].responseBody.length, 4096, 'a 10 KiB body is cut to its first 4 KiB')
  t.equal(Buffer.byteLength(attempts[0].responseBody), 4096)
  t.equal(attempts[0].responseBody, bigBody.slice(0, 4096))
  t.equal(attempts[1].responseBody, 'still busy')
  t.equal(attempts[2].responseBody, 'ok')

  const calls = callsFor(stepId)
  t.equal(calls.length, 3, 'the provider saw exactly three calls')
  t.ok(calls.every((c) => c.signatureValid), 'every call carries a valid signature')
  t.same(calls.map((c) => c.headers['idempotency-key']), [deliveryId, deliveryId, deliveryId], 'the same Idempotency-Key on every attempt')
  t.same(calls.map((c) => c.query.deliveryId), [deliveryId, deliveryId, deliveryId])
  t.same(calls.map((c) => c.query.timestamp), [t0, t1, t2].map((d) => String(Math.floor(d.getTime() / 1000))), 'each call is signed at its own time')

  const byOutcome = await rt.api.get(`/v1/deliveries?stepId=${stepId}&outcome=retry`)
  t.equal(byOutcome.data.items.length, 1, 'found by an attempt outcome')
})

t.test('429 with Retry-After: 120 waits 120 s instead of the first backoff step', async (t) => {
  const { instanceId, stepId } = await webhookStep('Valuation 429', [{ status: 429, headers: { 'retry-after': '120' }, body: 'slow down' }])
  const t0 = rt.clock.now()
  await rt.scheduler.runOnce()
  const delivery = await deliveryOf(stepId)
  t.equal(delivery.nextAttemptAt, at(t0, 120 * SECOND), 'Retry-After sets the next attempt')
  t.same(delivery.attempts.map((a: { outcome: string; statusCode: number }) => [a.outcome, a.statusCode]), [['retry', 429]])

  rt.clock.advance(DEFAULT_RETRY_POLICY.scheduleMs[0]! + SECOND)
  t.equal((await rt.scheduler.runOnce()).deliveries, 0, 'no call after the usual 10 s')
  rt.clock.set(new Date(t0.getTime() + 60 * SECOND))
  t.equal((await rt.scheduler.runOnce()).deliveries, 0, 'no call after 60 s')
  t.equal(callsFor(stepId).length, 1)

  rt.clock.set(new Date(t0.getTime() + 121 * SECOND))
  t.equal((await rt.scheduler.runOnce()).deliveries, 1, 'the call is made after 120 s')
  t.equal(callsFor(stepId).length, 2)
  t.equal((await deliveryOf(stepId)).status, 'succeeded')
  t.equal(await stepState(instanceId), 'done')
})

t.test('503 with a Retry-After date in the past, every time: one call a pass, on the backoff schedule, not all attempts at once', async (t) => {
  // A provider whose clock is behind ours: the date it names is past by the time we read it.
  const past = { status: 503, headers: { 'retry-after': 'Sun, 06 Nov 1994 08:49:37 GMT' }, body: 'busy' }
  const { instanceId, stepId } = await webhookStep('Valuation Retry-After past', [past, { ...past, headers: { 'retry-after': '0' } }])
  const t0 = rt.clock.now()
  t.equal((await rt.scheduler.runOnce()).deliveries, 1)
  t.equal(callsFor(stepId).length, 1, 'one call in the pass')
  let delivery = await deliveryOf(stepId)
  t.equal(delivery.status, 'pending')
  t.equal(delivery.nextAttemptAt, at(t0, DEFAULT_RETRY_POLICY.scheduleMs[0]!), 'the first backoff step')
  t.equal(await stepState(instanceId), 'due')

  rt.clock.advance(DEFAULT_RETRY_POLICY.scheduleMs[0]!)
  const t1 = rt.clock.now()
  t.equal((await rt.scheduler.runOnce()).deliveries, 1)
  t.equal(callsFor(stepId).length, 2, 'Retry-After: 0 asks for no wait either')
  delivery = await deliveryOf(stepId)
  t.equal(delivery.nextAttemptAt, at(t1, DEFAULT_RETRY_POLICY.scheduleMs[1]!), 'the second backoff step')
  t.same(delivery.attempts.map((a: { outcome: string; statusCode: number }) => [a.outcome, a.statusCode]), [['retry', 503], ['retry', 503]])

  rt.clock.advance(DEFAULT_RETRY_POLICY.scheduleMs[1]!)
  t.equal((await rt.scheduler.runOnce()).deliveries, 1)
  t.equal(await stepState(instanceId), 'done', 'the third attempt succeeds')
})

t.test('404 gives up at once: the step fails and the controller is told once', async (t) => {
  const name = 'Valuation 404'
  const { instanceId, stepId, deliveryId } = await webhookStep(name, [{ status: 404, body: 'no such hook' }])
  const run = await rt.scheduler.runOnce()
  t.equal(run.deliveries, 1)

  const delivery = await deliveryOf(stepId)
  t.equal(delivery.status, 'failed')
  t.equal(delivery.attemptCount, 1)
  t.equal(delivery.nextAttemptAt, null)
  t.match(delivery.lastError, /HTTP 404 is not retried/)
  t.same(delivery.attempts.map((a: { outcome: string; statusCode: number; responseBody: string }) => [a.outcome, a.statusCode, a.responseBody]),
    [['failed', 404, 'no such hook']])
  const view = await rt.instance(instanceId)
  t.equal(view.steps[0].state, 'failed', 'the step turns manual')
  t.equal(view.status, 'running', 'the process waits for a person')

  // Later passes neither call again nor queue a second mail.
  rt.clock.advance(DEFAULT_RETRY_POLICY.scheduleMs[2]!)
  t.equal((await rt.scheduler.runOnce()).deliveries, 0)
  await rt.newScheduler().runOnce()
  t.equal(callsFor(stepId).length, 1, 'one call only')
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from outbox_mails where kind = 'stepFailed' and dedupe_key like ${`%${deliveryId}%`}`.execute(rt.db)
  t.equal(rows[0]!.n, 1, 'one stepFailed mail queued')
  const mails = rt.smtp.mails.filter((m) => m.subject.includes(`"${name}"`))
  t.equal(mails.length, 1, 'and it arrives once')
  t.match(mails[0]!.subject, /^Webhook step failed: "Valuation 404" in "Re-value a property"/)
  t.same(mails[0]!.to, [rt.controller.email])
  t.match(mails[0]!.text, /HTTP 404 is not retried/)
})

t.test('a timeout is retried; the next attempt succeeds', async (t) => {
  const fast = rt.newScheduler({ timeoutMs: 300 })
  const { instanceId, stepId } = await webhookStep('Valuation timeout', [{ status: 200, body: 'too late', delayMs: 1500 }])
  const started = Date.now()
  await fast.runOnce()
  t.ok(Date.now() - started < 1400, 'the attempt ends at the timeout, not when the provider answers')
  let delivery = await deliveryOf(stepId)
  t.equal(delivery.status, 'pending')
  const [first] = delivery.attempts
  t.equal(first.outcome, 'retry')
  t.equal(first.statusCode, null)
  t.equal(first.responseBody, null)
  t.match(first.error, /ETIMEDOUT/)
  t.match(first.error, /no response within 300 ms/)
  t.ok(first.durationMs >= 250 && first.durationMs < 1400, `duration ${first.durationMs} ms is about the timeout`)
  t.equal(await stepState(instanceId), 'due')

  rt.clock.advance(DEFAULT_RETRY_POLICY.scheduleMs[0]!)
  await fast.runOnce()
  delivery = await deliveryOf(stepId)
  t.equal(delivery.status, 'succeeded')
  t.same(delivery.attempts.map((a: { outcome: string }) => a.outcome), ['retry', 'succeeded'])
  t.equal(await stepState(instanceId), 'done')
  t.equal(callsFor(stepId).length, 2)
})

t.test('a provider that always fails is given up after maxAttempts', async (t) => {
  const scheduler = rt.newScheduler({ policy: { ...FAST_RETRIES, maxAttempts: 3 } })
  const { instanceId, stepId } = await webhookStep('Valuation 500', Array.from({ length: 10 }, () => ({ status: 500, body: 'boom' })))
  await scheduler.runOnce()
  rt.clock.advance(DEFAULT_RETRY_POLICY.scheduleMs[0]!)
  await scheduler.runOnce()
  rt.clock.advance(DEFAULT_RETRY_POLICY.scheduleMs[1]!)
  await scheduler.runOnce()
  rt.clock.advance(DEFAULT_RETRY_POLICY.scheduleMs[2]!)
  t.equal((await scheduler.runOnce()).deliveries, 0, 'no fourth attempt')

  const delivery = await deliveryOf(stepId)
  t.equal(delivery.status, 'failed')
  t.equal(delivery.attemptCount, 3)
  t.equal(delivery.lastStatusCode, 500)
  t.same(delivery.attempts.map((a: { attempt: number; outcome: string; statusCode: number }) => [a.attempt, a.outcome, a.statusCode]),
    [[1, 'retry', 500], [2, 'retry', 500], [3, 'failed', 500]])
  t.equal(callsFor(stepId).length, 3)
  t.equal(await stepState(instanceId), 'failed')
  const mails = rt.smtp.mails.filter((m) => m.subject.includes('"Valuation 500"'))
  t.equal(mails.length, 1)
  t.match(mails[0]!.text, /could not be delivered \(gave up after 3 attempts, the last answered HTTP 500\)\. It is now a manual step/,
    'the mail says why, so the controller knows what to fix before a retry')
})

// The schedule is by attempt number, and a call cut off by a shutdown is an attempt (it may have
// reached the provider): tried again at once, in place of its own wait, so the failure after it waits
// the entry of its own number. Eight attempts then span the schedule's time as they would without it.
t.test('a call cut off by a shutdown is retried at once; the next failure waits the schedule entry of its own attempt number', async (t) => {
  const schedule = FAST_RETRIES.scheduleMs
  const { stepId } = await webhookStep('Valuation cut off', [{ status: 503 }, { status: 200, delayMs: 5000 }, { status: 503 }])
  const waits = async () => {
    const delivery = await deliveryOf(stepId)
    return { status: delivery.status, attempts: delivery.attempts.map((a: { attempt: number; outcome: string }) => `${a.attempt} ${a.outcome}`),
      waitMs: Date.parse(delivery.nextAttemptAt) - rt.clock.now().getTime() }
  }
  await rt.newScheduler().runOnce()
  t.same(await waits(), { status: 'pending', attempts: ['1 retry'], waitMs: schedule[0] })

  rt.clock.advance(schedule[0]!)
  const stopping = rt.newScheduler()
  const run = stopping.runOnce()
  for (let i = 0; i < 300 && callsFor(stepId).length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(callsFor(stepId).length, 2, 'the second call is in flight')
  await stopping.stop(50)
  await run
  t.same(await waits(), { status: 'pending', attempts: ['1 retry', '2 aborted'], waitMs: 0 }, 'cut off: counted, and due again at once')

  await rt.newScheduler().runOnce()
  t.same(await waits(), { status: 'pending', attempts: ['1 retry', '2 aborted', '3 retry'], waitMs: schedule[2] },
    'attempt 3 failed: it waits the third entry (5 min), not the second')
  rt.clock.advance(schedule[2]!)
  await rt.newScheduler().runOnce()
  t.equal((await deliveryOf(stepId)).status, 'succeeded')
  t.same(callsFor(stepId).map((c) => c.headers['idempotency-key']), Array(4).fill(callsFor(stepId)[0]!.headers['idempotency-key']))
})

// The statements before a call (the claim key, the host's slot) may wait behind others until the lease
// has run out and the claim is taken back: the call was made all the same, and then made again.
/**
 * A worker of 10 s leases whose claims ask for the claim key before each call; the first claim's
 * statement answers only after `meanwhile` (the clock moved, say). `asked` counts the claims that asked.
 */
async function workerWhoseFirstKeyWaits(meanwhile: () => Promise<void>) {
  const key = await loadClaimKey(rt.db, undefined)
  let asked = 0
  const worker = rt.newScheduler({ leaseMs: 10 * SECOND }, undefined, {
    claimKey: async () => {
      if (asked++ === 0) await meanwhile()
      return key
    }
  })
  return { worker, asked: () => asked }
}

t.test('a claim whose lease ran out before its call is made makes no call: the call is made once, by the next claim', async (t) => {
  const { stepId } = await webhookStep('Valuation late claim')
  // The key's statement answers only once the lease has run out and the claim was taken back.
  const { worker } = await workerWhoseFirstKeyWaits(async () => {
    rt.clock.advance(11 * SECOND)
    await reapExpiredLeases(rt.db, rt.clock.now())
  })
  await worker.runOnce()
  await worker.runOnce()
  t.equal(callsFor(stepId).length, 1, 'one call, by the claim that held its lease')
  t.same((await deliveryOf(stepId)).attempts.map((a: { attempt: number; outcome: string }) => [a.attempt, a.outcome]), [[1, 'aborted'], [2, 'succeeded']],
    'the claim taken back is logged as the reaper logs it, the call by the next one')
})

// A review found the call made with less lease left than its timeout: one that ran on past the lease was
// taken back by the reaper and made again by the next claim, without any crash.
t.test('a claim with less lease left than the call\'s timeout makes no call and goes back uncounted; the next claim makes it', async (t) => {
  const { stepId } = await webhookStep('Valuation nearly late claim')
  // The first claim's statement answers with 1 s of the lease left, less than the 2 s timeout.
  const { worker, asked } = await workerWhoseFirstKeyWaits(async () => { rt.clock.advance(9 * SECOND) })
  await worker.runOnce()
  t.equal(asked(), 2, 'the first claim gave the delivery back, and the pass claimed it again')
  t.equal(callsFor(stepId).length, 1, 'one call, by the second claim')
  t.same((await deliveryOf(stepId)).attempts.map((a: { attempt: number; outcome: string }) => [a.attempt, a.outcome]), [[1, 'succeeded']], 'one attempt')
})

t.test('a worker whose lease expired is fenced: its late outcome changes nothing', async (t) => {
  const { instanceId, stepId, deliveryId } = await webhookStep('Valuation fenced')
  const claimedAt = rt.clock.now()
  const claims = await claimDeliveries(rt.db, { workerId: 'worker-a', now: claimedAt, leaseMs: 1000, limit: 10 })
  t.same(claims.map((c) => c.id), [deliveryId], 'worker A holds the delivery')
  const stale = claims[0]!
  t.equal(stale.attempt, 1)
  t.equal(await stepState(instanceId), 'running')

  // Worker A goes quiet; its lease runs out and worker B takes over.
  rt.clock.advance(2 * SECOND)
  t.equal(await reapExpiredLeases(rt.db, rt.clock.now()), 1, 'the expired lease is reaped')
  t.equal(await stepState(instanceId), 'due')
  const workerB = rt.newScheduler()
  t.equal((await workerB.runOnce()).deliveries, 1, 'worker B delivers it')
  t.equal(callsFor(stepId).length, 1)

  const before = await deliveryOf(stepId)
  t.equal(before.status, 'succeeded')
  t.same(before.attempts.map((a: { attempt: number; outcome: string }) => [a.attempt, a.outcome]), [[1, 'aborted'], [2, 'succeeded']],
    'the reaped claim (aborted) and the takeover are both logged')
  t.match(before.attempts[0].error, /lease expired/)
  const viewBefore = await rt.instance(instanceId)
  const count = async (table: 'activities' | 'outbox_mails') =>
    (await sql<{ n: number }>`select count(*)::int as n from ${sql.table(table)} where tenant_id = ${rt.tenant.id}`.execute(rt.db)).rows[0]!.n
  const [activitiesBefore, mailsBefore] = [await count('activities'), await count('outbox_mails')]

  // Worker A wakes up and reports what would hurt most: a give-up.
  const result = await recordOutcome(rt.db, {
    delivery: stale,
    startedAt: claimedAt,
    durationMs: 2500,
    statusCode: 410,
    error: null,
    responseBody: 'gone',
    decision: { action: 'give-up', reason: 'HTTP 410 is not retried' },
    outcome: 'failed'
  }, rt.clock.now())
  t.equal(result, 'fenced')

  const after = await deliveryOf(stepId)
  t.same(after, before, 'the delivery and its attempt log are unchanged')
  t.same(await rt.instance(instanceId), viewBefore, 'the instance and its step are unchanged')
  t.equal(await count('activities'), activitiesBefore, 'no activity written')
  t.equal(await count('outbox_mails'), mailsBefore, 'no mail queued')
  const { rows } = await sql<{ fence: number; status: string }>`select fence, status from deliveries where id = ${deliveryId}`.execute(rt.db)
  t.same(rows, [{ fence: 2, status: 'succeeded' }])

  // A late success from A is fenced just the same.
  t.equal(await recordOutcome(rt.db, {
    delivery: stale, startedAt: claimedAt, durationMs: 2500, statusCode: 200, error: null, responseBody: 'ok', decision: { action: 'succeed' }, outcome: 'succeeded'
  }, rt.clock.now()), 'fenced')
  t.same(await deliveryOf(stepId), before)
})

t.test('a reaped claim and a released one keep their place in the queue, ahead of deliveries that fell due after them', async (t) => {
  const first = await webhookStep('Queue first')
  const dueAt = async (id: string) =>
    (await sql<{ at: Date }>`select next_attempt_at as at from deliveries where id = ${id}`.execute(rt.db)).rows[0]!.at.toISOString()
  const firstDue = await dueAt(first.deliveryId)
  const claimedAt = rt.clock.now()
  t.same((await claimDeliveries(rt.db, { workerId: 'worker-a', now: claimedAt, leaseMs: 1000, limit: 1 })).map((c) => c.id), [first.deliveryId])

  // Worker A dies holding it; another process falls due while its lease runs.
  rt.clock.advance(500)
  const later = await webhookStep('Queue later')
  rt.clock.advance(2 * SECOND)
  t.equal(await reapExpiredLeases(rt.db, rt.clock.now()), 1, 'the expired lease is reaped')
  t.equal(await dueAt(first.deliveryId), firstDue, 'the reaped delivery keeps the due time it was claimed at')
  const retaken = await claimDeliveries(rt.db, { workerId: 'worker-b', now: rt.clock.now(), leaseMs: 10 * SECOND, limit: 1 })
  t.same(retaken.map((c) => c.id), [first.deliveryId], 'the next claim takes the reaped delivery before the later one')

  // Released uncounted (no host slot came in time): back to its place, not to the end of the queue.
  rt.clock.advance(SECOND)
  await releaseDelivery(rt.db, retaken[0]!)
  t.equal(await dueAt(first.deliveryId), firstDue, 'the released delivery keeps its due time')
  const again = await claimDeliveries(rt.db, { workerId: 'worker-c', now: rt.clock.now(), leaseMs: 10 * SECOND, limit: 1 })
  t.same(again.map((c) => [c.id, c.attempt]), [[first.deliveryId, 2]], 'claimed first again; the release used no attempt')

  // A release to a later time (a secret this worker cannot open) moves it behind.
  await releaseDelivery(rt.db, again[0]!, { dueAt: new Date(rt.clock.now().getTime() + 60 * SECOND) })
  t.same((await claimDeliveries(rt.db, { workerId: 'worker-d', now: rt.clock.now(), leaseMs: 10 * SECOND, limit: 1 })).map((c) => c.id), [later.deliveryId])

  rt.clock.advance(61 * SECOND)
  await rt.scheduler.runOnce()
  rt.clock.advance(11 * SECOND)
  await rt.scheduler.runOnce()
  t.equal((await deliveryOf(first.stepId)).status, 'succeeded')
  t.equal((await deliveryOf(later.stepId)).status, 'succeeded')
})

t.test('one batch of outcomes: a success moves its process on, a last success completes its process, a stale claim is fenced, a retry waits', async (t) => {
  const twoSteps = await rt.template([{ kind: 'webhook', name: 'Batch first', refersTo: { property: true } }, { kind: 'task', name: 'Batch then' }])
  const moving = await rt.start(twoSteps)
  const last = await webhookStep('Batch last')
  const stale = await webhookStep('Batch stale')
  const retried = await webhookStep('Batch retried')
  const claimedAt = rt.clock.now()
  const claims = await claimDeliveries(rt.db, { workerId: 'worker-batch', now: claimedAt, leaseMs: 60 * SECOND, limit: 10 })
  const claimOf = (deliveryId: string) => claims.find((c) => c.id === deliveryId)!
  const ids = [moving.steps[0].delivery.id as string, last.deliveryId, stale.deliveryId, retried.deliveryId]
  t.same(claims.map((c) => c.id).sort(), [...ids].sort(), 'the four deliveries are claimed')
  const record = (delivery: ClaimedDelivery, decision: AttemptRecord['decision'], statusCode: number): AttemptRecord => ({
    delivery, startedAt: claimedAt, durationMs: 20, statusCode, error: null, responseBody: 'ok', decision,
    outcome: decision.action === 'succeed' ? 'succeeded' : 'failed'
  })
  const staleClaim = { ...claimOf(stale.deliveryId), fence: claimOf(stale.deliveryId).fence - 1 }
  rt.clock.advance(SECOND)
  t.same(await recordOutcomes(rt.db, [
    record(claimOf(ids[0]!), { action: 'succeed' }, 200),
    record(claimOf(last.deliveryId), { action: 'succeed' }, 200),
    record(staleClaim, { action: 'succeed' }, 200),
    record(claimOf(retried.deliveryId), { action: 'retry', delayMs: 30 * SECOND }, 503)
  ], rt.clock.now()), ['recorded', 'recorded', 'fenced', 'recorded'])

  const moved = await rt.instance(moving.id)
  t.same(moved.steps.map((s: { state: string }) => s.state), ['done', 'due'], 'the success ended its step and started the next')
  t.equal(moved.status, 'running')
  const completed = await rt.instance(last.instanceId)
  t.same([completed.status, completed.steps[0].state], ['completed', 'done'], 'the last step\'s success completed its process')
  t.equal(await stepState(stale.instanceId), 'running', 'the fenced outcome changed nothing')
  t.same((await deliveryOf(stale.stepId)).attempts, [], 'and logged no attempt')
  t.equal(await stepState(retried.instanceId), 'due', 'the retried step waits')
  const waiting = await deliveryOf(retried.stepId)
  t.same([waiting.status, waiting.attempts.length], ['pending', 1], 'its delivery is pending again, the attempt logged')

  // The claim that holds records its outcome afterwards, on its own.
  t.equal(await recordOutcome(rt.db, record(claimOf(stale.deliveryId), { action: 'succeed' }, 200), rt.clock.now()), 'recorded')
  t.equal((await rt.instance(stale.instanceId)).status, 'completed')
  // The retry is made once due, by a scheduler, and the process completes.
  rt.clock.advance(31 * SECOND)
  await rt.newScheduler().runOnce()
  t.equal((await rt.instance(retried.instanceId)).status, 'completed')
})

t.test('a batch of outcomes is two round trips: BEGIN, its lock wait, the lock, the settling and the end of the wait together, then the changes with COMMIT', async (t) => {
  const { rows } = await sql<{ name: string }>`select current_database() as name`.execute(rt.db)
  const url = databaseUrl(rows[0]!.name)
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(url).port || 5432) })
  // One connection, kept however long the batches take: the statements the first batch prepares are
  // prepared for the second.
  const proxied = openPostgres(proxy.url(url), { poolMax: 1, idleTimeoutMs: 0 })
  t.teardown(async () => {
    await proxied.close()
    await proxy.close()
  })
  const batch = async (name: string) => {
    const steps = [await webhookStep(`${name} one`), await webhookStep(`${name} two`)]
    const claims = await claimDeliveries(rt.db, { workerId: 'worker-trips', now: rt.clock.now(), leaseMs: 60 * SECOND, limit: 10 })
    t.same(claims.map((c) => c.id).sort(), steps.map((s) => s.deliveryId).sort(), 'the two deliveries are claimed')
    return claims.map((delivery): AttemptRecord => ({
      delivery, startedAt: rt.clock.now(), durationMs: 5, statusCode: 200, error: null, responseBody: 'ok', decision: { action: 'succeed' }, outcome: 'succeeded'
    }))
  }
  t.same(await recordOutcomes(proxied.db, await batch('Warm-up'), rt.clock.now()), ['recorded', 'recorded'])
  const records = await batch('Watched')
  const stop = proxy.record()
  t.same(await recordOutcomes(proxied.db, records, rt.clock.now()), ['recorded', 'recorded'])
  const sent = stop()
  const first = sent[0]!.roundTrip
  const trips = sent.map(({ text, roundTrip }) => `${roundTrip - first + 1}: ${text.replace(/\s+/g, ' ').trim().slice(0, 40)}`)
  t.same(trips, [
    '1: begin',
    "1: select set_config('lock_timeout', least(",
    '1: select p.* from jsonb_to_recordset($1::j',
    '1: with settled as ( update deliveries d se',
    "1: select set_config('lock_timeout', curren",
    '2: with changed as ( update instance_steps ',
    '2: commit'
  ], 'the lock wait, the lock, the settling and the lock wait\'s end share the round trip of BEGIN; the changes carry the COMMIT')
  for (const { instanceId } of records.map((r) => r.delivery)) t.equal((await rt.instance(instanceId!)).status, 'completed', 'the process completed')
})

t.test('two outcomes of one delivery in one batch, the first claim\'s lease run out and the delivery claimed again: only the claim that holds is recorded', async (t) => {
  // A worker whose outcome waited in its queue past the lease (its database slow), while its own reaper
  // put the delivery back and it claimed and called it again: both outcomes go in the same batch.
  const { instanceId, stepId, deliveryId } = await webhookStep('Batch of two claims')
  const claim = async () => (await claimDeliveries(rt.db, { workerId: 'worker-twice', now: rt.clock.now(), leaseMs: 60 * SECOND, limit: 10 })).find((c) => c.id === deliveryId)!
  const stale = await claim()
  rt.clock.advance(61 * SECOND)
  t.equal(await reapExpiredLeases(rt.db, rt.clock.now()), 1)
  const holding = await claim()
  t.equal(holding.fence, stale.fence + 1)
  const outcome = (delivery: ClaimedDelivery, status: number): AttemptRecord => ({
    delivery, startedAt: rt.clock.now(), durationMs: 5, statusCode: status, error: null, responseBody: `answer ${status}`,
    decision: status === 200 ? { action: 'succeed' } : { action: 'retry', delayMs: 10 * SECOND }, outcome: status === 200 ? 'succeeded' : 'retry'
  })
  t.same(await recordOutcomes(rt.db, [outcome(stale, 200), outcome(holding, 503)], rt.clock.now()), ['fenced', 'recorded'])
  const delivery = await deliveryOf(stepId)
  t.same(delivery.attempts.map((a: { attempt: number; outcome: string; responseBody: string | null }) => [a.attempt, a.outcome, a.responseBody]),
    [[1, 'aborted', null], [2, 'retry', 'answer 503']], 'the stale claim\'s success is not logged beside the reaper\'s entry for it')
  t.equal(delivery.status, 'pending')
  t.equal(await stepState(instanceId), 'due', 'the step waits for its retry: the stale success did not end it')
  t.equal((await rt.instance(instanceId)).status, 'running', 'nor complete its process')
})

t.test('a body with NUL bytes is logged with U+FFFD in their place: the success is recorded, the provider called once', async (t) => {
  const { instanceId, stepId } = await webhookStep('Valuation NUL', [{ status: 200, body: '{"ok":true,"pad":"\u0000"}\u0000end' }])
  await rt.newScheduler().runOnce()
  const delivery = await deliveryOf(stepId)
  t.equal(delivery.status, 'succeeded')
  t.same(delivery.attempts.map((a: { outcome: string; responseBody: string }) => [a.outcome, a.responseBody]),
    [['succeeded', '{"ok":true,"pad":"\uFFFD"}\uFFFDend']])
  t.equal(await stepState(instanceId), 'done')
  t.equal(callsFor(stepId).length, 1, 'one call')
})

t.test('a body cut at 4 KiB inside a character keeps the whole characters before it, and no U+FFFD the provider never sent', async (t) => {
  // € is three bytes: 1365 of them fill 4095 bytes, and the 4096th byte is the first of the next one.
  const { stepId } = await webhookStep('Valuation multi-byte', [{ status: 200, body: '€'.repeat(3000) }])
  await rt.newScheduler().runOnce()
  const [attempt] = (await deliveryOf(stepId)).attempts
  t.equal(attempt.responseBody, '€'.repeat(1365))
  t.ok(Buffer.byteLength(attempt.responseBody) <= 4096, 'no more than 4 KiB')
})

// The claim was redacted and NULs replaced after the cut: a short "bcl_…" at its end grew into
// "bcl_[redacted]", and 4096 NUL bytes into 12 KiB of U+FFFD, past the 4 KiB the log keeps.
t.test('a body is logged within 4 KiB also where a claim-like word is redacted or NULs replaced', async (t) => {
  const echo = await webhookStep('Valuation echo', [{ status: 200, body: 'z'.repeat(4090) + 'bcl_abcdefghijkl' }])
  const nul = await webhookStep('Valuation NULs', [{ status: 200, body: '\u0000'.repeat(5000) }])
  await rt.newScheduler().runOnce()
  const [echoed] = (await deliveryOf(echo.stepId)).attempts
  t.ok(Buffer.byteLength(echoed.responseBody) <= 4096, `no more than 4 KiB (${Buffer.byteLength(echoed.responseBody)} bytes)`)
  t.notMatch(echoed.responseBody, /bcl_ab/)
  t.ok(echoed.responseBody.startsWith('z'.repeat(4090)))
  const [nuls] = (await deliveryOf(nul.stepId)).attempts
  t.equal(nuls.responseBody, '\uFFFD'.repeat(1365), 'as many U+FFFD as fit in 4 KiB')
})

// A provider's error page that escaped the URL, wrapped it or came in UTF-16 kept the claim (or its mac, which
// makes it valid) in the attempt log the tenant reads; so did one showing the secret the call was signed with.
t.test('a claim or secret a provider echoes escaped, wrapped or in UTF-16 is not kept in the attempt log', async (t) => {
  const echoes: Record<string, (url: string) => string | Buffer> = {
    'HTML entities': (url) => `<p>No route for ${url.replace(/[_.&]/g, (c) => `&#${c.charCodeAt(0)};`)}</p>`,
    'JSON escapes': (url) => JSON.stringify({ url }).replace(/[_.-]/g, (c) => `\\u00${c.charCodeAt(0).toString(16)}`),
    'lines of 40': (url) => `request:\n${url.replace(/(.{40})/g, '$1\n')}`,
    'quoted-printable lines': (url) => url.replace(/(.{75})/g, '$1=\r\n'),
    'UTF-16': (url) => Buffer.from(`bad request ${url}`, 'utf16le'),
    'the signing secret': () => `signature mismatch; key ${rt.secret.replace(/[_+/=]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}`
  }
  const steps = await Promise.all(Object.entries(echoes).map(async ([name, echo]) => ({
    name,
    ...await webhookStep(`Echo ${name}`, [(call: ReceivedCall) => ({ status: 500, headers: { 'content-type': 'text/plain' }, body: echo(call.url) })])
  })))
  await rt.newScheduler().runOnce()
  // The text as its reader would take it: escapes decoded, and breaks, NULs and U+FFFD dropped.
  const plain = (text: string) => text.replaceAll('\u0000', '').replace(/=\r?\n|[\s\uFFFD]/g, '')
    .replace(/&#(\d+);|\\u([0-9a-f]{4})|%([0-9A-F]{2})/gi, (_m, dec?: string, json?: string, pct?: string) => String.fromCharCode(dec ? Number(dec) : parseInt((json ?? pct)!, 16)))
  for (const step of steps) {
    const [call] = callsFor(step.stepId)
    const claim = call!.query.apiClaim!
    const [attempt] = (await deliveryOf(step.stepId)).attempts
    const body = plain(attempt.responseBody as string)
    t.notOk(body.includes(claim.slice(claim.lastIndexOf('.') + 1)), `${step.name}: no claim's mac`)
    t.notOk(body.includes(rt.secret), `${step.name}: no signing secret`)
    t.match(body, /\[redacted\]/, `${step.name}: the body is kept, the values replaced`)
  }
})

// A Standard Webhooks library holds a whsec_ secret as the base64 key after the prefix, and so does a
// provider's page that shows it: that part, which signs as well as the whole, was kept in the attempt log.
t.test('a whsec_ secret a provider echoes without its prefix is not kept in the attempt log', async (t) => {
  t.match(rt.secret, /^whsec_/)
  const key = rt.secret.slice('whsec_'.length)
  const { stepId } = await webhookStep('Echo the key', [{ status: 500, body: `signature mismatch; key ${key} (${encodeURIComponent(key)})` }])
  await rt.newScheduler().runOnce()
  const [attempt] = (await deliveryOf(stepId)).attempts
  t.equal(attempt.responseBody, 'signature mismatch; key [redacted] ([redacted])')
})

// The body was cut at 4 KiB before the values were looked for: a mac the cut split kept its first part.
t.test('a mac the 4 KiB cut splits is redacted, none of its first part kept', async (t) => {
  const { stepId } = await webhookStep('Echo across the cut', [(call: ReceivedCall) => {
    const claim = call.query.apiClaim!
    return { status: 500, body: `${'z'.repeat(4070)}\n${claim.slice(claim.lastIndexOf('.') + 1)}\n` }
  }])
  await rt.newScheduler().runOnce()
  const claim = callsFor(stepId)[0]!.query.apiClaim!
  const [attempt] = (await deliveryOf(stepId)).attempts
  t.equal(attempt.responseBody, `${'z'.repeat(4070)}\n[redacted]\n`)
  t.notOk((attempt.responseBody as string).includes(claim.slice(claim.lastIndexOf('.') + 1, claim.lastIndexOf('.') + 9)))
})

// The values are looked for in the body's first 8 KiB: echoes spread out (a character a line) shrink
// to their "[redacted]", and a secret the 8 KiB cut split came into the 4 KiB kept with its first part.
t.test('a secret the 8 KiB window splits is not kept in part, however much the echoes before it shrank', async (t) => {
  const { stepId } = await webhookStep('Echo spread out across the window', [() => {
    const spread = [...rt.secret].join('\n')
    const echoes = `${spread}\n`.repeat(Math.floor(8000 / (spread.length + 1)))
    return { status: 500, body: `${echoes}${'y'.repeat(8192 - echoes.length - 30)}${rt.secret}${'y'.repeat(100)}` }
  }])
  await rt.newScheduler().runOnce()
  const [attempt] = (await deliveryOf(stepId)).attempts
  const body = attempt.responseBody as string
  t.ok(Buffer.byteLength(body) < 4096, `the echoes shrank (${Buffer.byteLength(body)} bytes kept)`)
  t.notOk(body.includes(rt.secret.slice(0, 20)), 'the secret\'s first part is not kept')
  t.match(body, /^(?:whsec_\[redacted\]\n=\n)+y+$/, 'the echoes are replaced and the text before the split secret kept')
})

// WEBHOOK_MAX_BODY_BYTES may be 1 KiB: the client cuts the body there, and a secret the cut split kept its first part.
t.test('a secret the client\'s body cap splits is not kept in part', async (t) => {
  const http = createHttpClient({ maxBodyBytes: 1024, maxSockets: 4, userAgent: 'Baton/test', allowPrivateNetworks: true })
  t.teardown(() => http.close())
  const { stepId } = await webhookStep('Echo across the cap', [() => ({ status: 500, body: `${'y'.repeat(1000)}${rt.secret}${'y'.repeat(100)}` })])
  await rt.newScheduler({}, undefined, { http }).runOnce()
  const [attempt] = (await deliveryOf(stepId)).attempts
  t.equal(attempt.responseBody, 'y'.repeat(1000), 'the body up to the split secret')
})

t.test('an outcome whose text Postgres refuses is recorded without that text, alone; the rest of its batch as it came', async (t) => {
  const bad = await webhookStep('Batch refused text')
  const good = await webhookStep('Batch beside it')
  const claimedAt = rt.clock.now()
  const claims = await claimDeliveries(rt.db, { workerId: 'worker-text', now: claimedAt, leaseMs: 60 * SECOND, limit: 10 })
  const claimOf = (deliveryId: string) => claims.find((c) => c.id === deliveryId)!
  // Past `storable` (src/scheduler/deliver.ts): text that reaches the batcher with a NUL in it.
  const record = (deliveryId: string, text: string): AttemptRecord => ({
    delivery: claimOf(deliveryId), startedAt: claimedAt, durationMs: 5, statusCode: 200, error: null, responseBody: text,
    decision: { action: 'succeed' }, outcome: 'succeeded'
  })
  const batcher = new OutcomeBatcher(rt.db, rt.clock)
  t.same(await Promise.all([batcher.record(record(bad.deliveryId, 'a\u0000b'), new Date(claimedAt.getTime() + 60 * SECOND)),
    batcher.record(record(good.deliveryId, 'fine'), new Date(claimedAt.getTime() + 60 * SECOND))]), ['recorded', 'recorded'])
  t.same((await deliveryOf(bad.stepId)).attempts.map((a: { outcome: string; responseBody: string }) => [a.outcome, a.responseBody]),
    [['succeeded', '(the response body could not be stored: SQLSTATE 22P05)']], 'the success, with a note for its body')
  t.equal(await stepState(bad.instanceId), 'done')
  t.same((await deliveryOf(good.stepId)).attempts.map((a: { responseBody: string }) => a.responseBody), ['fine'])
  t.equal(await stepState(good.instanceId), 'done')
})

t.test('an outcome recorded as the batcher finishes its last batch is written, however many turns of the microtask queue later', async (t) => {
  const steps = await Promise.all(Array.from({ length: 8 }, (_, i) => webhookStep(`Batcher's last turn ${i}`)))
  const claimedAt = rt.clock.now()
  const claims = await claimDeliveries(rt.db, { workerId: 'worker-turns', now: claimedAt, leaseMs: 60 * SECOND, limit: 20 })
  const record = (deliveryId: string): AttemptRecord => ({
    delivery: claims.find((c) => c.id === deliveryId)!, startedAt: claimedAt, durationMs: 5, statusCode: 200, error: null, responseBody: 'ok',
    decision: { action: 'succeed' }, outcome: 'succeeded'
  })
  const until = new Date(claimedAt.getTime() + 60 * SECOND)
  const batcher = new OutcomeBatcher(rt.db, rt.clock)
  for (let turns = 0; turns < 4; turns++) {
    const [first, second] = [steps[2 * turns]!, steps[2 * turns + 1]!]
    const later = batcher.record(record(first.deliveryId), until).then(async () => {
      for (let i = 0; i < turns; i++) await null
      return batcher.record(record(second.deliveryId), until)
    })
    // Without a write the answer never comes: a guard of real time, met at once when the outcome is written.
    const outcome = await Promise.race([later, new Promise((resolve) => setTimeout(() => resolve('never written'), 5000).unref())])
    t.equal(outcome, 'recorded', `recorded ${turns} turns after the batch before it was`)
    t.equal(await stepState(second.instanceId), 'done')
  }
})
