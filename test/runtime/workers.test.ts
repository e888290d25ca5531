// Worker processes (`src/server.ts --role=worker`) against one real Postgres: a worker killed with
// calls in flight, three workers draining 1,000 due steps, SIGTERM with a call in flight, and a worker
// paused past its lease whose late outcomes are fenced out.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from '../../src/db/kysely.js'
import type { Test } from 'tap'
import t from 'tap'
import { TRIGGERS_NOTIFY } from '../../src/db/wakeups.js'
import { startInstance } from '../../src/modules/instances/service.js'
import { holdRow, waitForLockWait } from '../helpers/database.js'
import { runScript, workerEnv, type RunningProcess } from '../helpers/process.js'
import type { ReceivedCall, Reply } from '../helpers/provider.js'
import { setupRuntime, type RuntimeContext } from '../helpers/runtime.js'

interface Workers {
  spawn(name: string, env?: Record<string, string>): RunningProcess
  /** Every worker's output so far, for failure messages. */
  logs(): string
}

/**
 * Worker processes on the runtime's database, on the real clock. Each runs in node itself (runScript,
 * not a CLI that starts it in a child), so SIGKILL and SIGTERM reach the worker; all are killed at
 * teardown, and their logs are printed when the test failed.
 */
async function workersFor(t: Test, rt: RuntimeContext): Promise<Workers> {
  const { rows } = await sql<{ name: string }>`select current_database() as name`.execute(rt.db)
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-workers-'))
  const running: { name: string; process: RunningProcess }[] = []
  const logs = () => running.map((w) => `--- worker ${w.name} (exit ${w.process.child.exitCode ?? w.process.child.signalCode ?? 'running'}) ---\n${w.process.output()}`).join('\n')
  t.teardown(async () => {
    for (const worker of running) if (worker.process.child.exitCode === null && worker.process.child.signalCode === null) worker.process.child.kill('SIGKILL')
    await Promise.all(running.map((w) => w.process.exited))
    if (!t.passing()) process.stderr.write(`${logs()}\n`)
    await rm(dataDir, { recursive: true, force: true })
  })
  return {
    logs,
    spawn(name, env = {}) {
      const child = runScript('src/server.ts', {
        ...workerEnv(rows[0]!.name, dataDir, name),
        WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true',
        ...env
      }, ['--role=worker'])
      running.push({ name, process: child })
      return child
    }
  }
}

/** Polls until the check returns true; fails with the workers' logs at the deadline. */
async function waitUntil(what: string, check: () => Promise<boolean> | boolean, workers: Workers, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${workers.logs()}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/**
 * A test-only audit of claims: every time a worker takes a lease, a row names the delivery, the
 * worker and the fence. Lives only in this test's database.
 */
async function auditClaims(rt: RuntimeContext): Promise<void> {
  await sql`create table test_claims (delivery_id uuid not null, owner text not null, fence integer not null, at timestamptz not null default clock_timestamp())`.execute(rt.db)
  await sql.raw(`create function test_log_claim() returns trigger language plpgsql as $$
    begin insert into test_claims (delivery_id, owner, fence) values (new.id, new.lease_owner, new.fence); return null; end $$`).execute(rt.db)
  await sql.raw(`create trigger test_claims_log after update of lease_owner on deliveries
    for each row when (new.lease_owner is not null) execute function test_log_claim()`).execute(rt.db)
}

async function deliveryStatuses(rt: RuntimeContext): Promise<Record<string, number>> {
  const rows = await rt.db.selectFrom('deliveries').select(['status', (eb) => eb.fn.countAll<string>().as('n')]).groupBy('status').execute()
  return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]))
}

const deliveryIdOf = (call: ReceivedCall) => call.query.deliveryId

// Three tests that each boot worker processes: ~40-60 s on an idle machine, more on a busy one.
t.setTimeout(240_000)

t.test('crash: a worker killed with calls in flight; a second worker finishes every step after the lease', async (t) => {
  const rt = await setupRuntime(t)
  const workers = await workersFor(t, rt)
  await auditClaims(rt)
  rt.clock.set(new Date())
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Ask ValueCo', refersTo: { property: true } },
    { kind: 'task', name: 'Read the valuation' }
  ])
  const N = 20
  const instances: { id: string; steps: { id: string }[] }[] = []
  for (let i = 0; i < N; i++) instances.push(await rt.start(templateId))

  // Worker A's calls hang until A is gone; afterwards the provider answers at once.
  let holding = true
  let release: () => void = () => {}
  const released = new Promise<void>((resolve) => { release = resolve })
  rt.provider.always((): Reply | Promise<Reply> => holding ? released.then(() => ({ status: 200, body: 'too late' })) : { status: 200, body: 'ok' })
  t.teardown(() => release())

  const settings = {
    SCHEDULER_LEASE_MS: '3000', WEBHOOK_TIMEOUT_MS: '2000', SCHEDULER_POLL_INTERVAL_MS: '200',
    SCHEDULER_CONCURRENCY: '32', WEBHOOK_PER_HOST_CONCURRENCY: '32'
  }
  const a = workers.spawn('worker-a', settings)
  await waitUntil(`${N} calls from worker A`, () => rt.provider.calls.length >= N, workers)
  a.child.kill('SIGKILL')
  const killedAt = Date.now()
  t.equal(await a.exited, null, 'worker A died of SIGKILL')
  t.equal(a.child.signalCode, 'SIGKILL')
  const callsFromA = rt.provider.calls.length
  t.equal(callsFromA, N, 'every step was called once before the crash')

  const held = await rt.db.selectFrom('deliveries').select(['id', 'status', 'lease_owner', 'lease_expires_at', 'attempt_count']).execute()
  t.equal(held.length, N)
  t.ok(held.every((d) => d.status === 'running' && d.lease_owner === 'worker-a' && d.attempt_count === 1), 'all deliveries are held by the dead worker')
  const leaseEnds = new Map(held.map((d) => [d.id, d.lease_expires_at!.getTime()]))
  const crashedSteps = await rt.db.selectFrom('instance_steps').select('state').where('position', '=', 1).execute()
  t.ok(crashedSteps.every((s) => s.state === 'running'), 'their steps are running')

  holding = false
  release()
  const b = workers.spawn('worker-b', settings)
  await waitUntil('every delivery to succeed', async () => (await deliveryStatuses(rt)).succeeded === N, workers)
  t.comment(`all ${N} steps done ${Date.now() - killedAt} ms after the kill (lease 3000 ms)`)

  const statuses = await deliveryStatuses(rt)
  t.same(statuses, { succeeded: N }, 'every delivery succeeded')
  const steps = await rt.db.selectFrom('instance_steps').select(['instance_id', 'position', 'state']).orderBy('position').execute()
  t.equal(steps.filter((s) => s.position === 1 && s.state === 'done').length, N, 'no webhook step was lost: all are done')
  t.equal(steps.filter((s) => s.position === 2 && s.state === 'due').length, N, 'and each started its next step')

  const callsFromB = rt.provider.calls.slice(callsFromA)
  t.equal(callsFromB.length, N, 'worker B called each step once')
  t.equal(new Set(rt.provider.calls.map(deliveryIdOf)).size, N, 'the distinct deliveries called are exactly the steps')
  t.equal(new Set(callsFromB.map(deliveryIdOf)).size, N, 'none twice by worker B')
  t.ok(rt.provider.calls.every((c) => c.signatureValid), 'every signature is valid')
  t.ok(rt.provider.calls.every((c) => c.headers['idempotency-key'] === c.query.deliveryId), 'a repeated call carries the same Idempotency-Key')
  t.ok(callsFromB.every((c) => c.at >= leaseEnds.get(deliveryIdOf(c)!)!), 'worker B waited for the dead worker\'s lease to run out')

  const attempts = await rt.db.selectFrom('delivery_attempts')
    .select(['delivery_id', 'attempt_number', 'outcome', 'status_code', 'error']).orderBy('delivery_id').orderBy('attempt_number').execute()
  const byDelivery = new Map<string, typeof attempts>()
  for (const attempt of attempts) byDelivery.set(attempt.delivery_id, [...(byDelivery.get(attempt.delivery_id) ?? []), attempt])
  t.equal(byDelivery.size, N)
  t.ok([...byDelivery.values()].every((log) => log.length === 2
    && log[0]!.attempt_number === 1 && log[0]!.outcome === 'aborted' && /lease expired/.test(log[0]!.error ?? '')
    && log[1]!.attempt_number === 2 && log[1]!.outcome === 'succeeded' && log[1]!.status_code === 200
  ), 'each attempt log shows the lease expiring, then the takeover succeeding as attempt 2')

  const claims = await sql<{ owner: string; n: string }>`select owner, count(*) as n from test_claims group by owner order by owner`.execute(rt.db)
  t.same(claims.rows.map((r) => [r.owner, Number(r.n)]), [['worker-a', N], ['worker-b', N]], 'each worker claimed each delivery once')

  const first = instances[0]!
  const readable = await rt.api.get(`/v1/deliveries?instanceId=${first.id}`)
  t.same(readable.data.items[0].attempts.map((a: { outcome: string }) => a.outcome), ['aborted', 'succeeded'], 'the attempt log is readable over the API')

  b.child.kill('SIGTERM')
  t.equal(await b.exited, 0, 'worker B stops cleanly')
})

t.test('concurrency: three workers drain 1,000 due webhook steps, each called exactly once', async (t) => {
  const rt = await setupRuntime(t)
  const workers = await workersFor(t, rt)
  await auditClaims(rt)
  const templateId = await rt.template([{ kind: 'webhook', name: 'Notify ValueCo' }])
  rt.provider.always({ status: 200, body: 'ok' })

  // The workers boot while the steps are created. Until all three listen, new deliveries are parked
  // (a test-only trigger moves their due time far ahead); then all turn due at once.
  const spawnedAt = Date.now()
  const running = ['worker-1', 'worker-2', 'worker-3'].map((name) => workers.spawn(name, {
    // The per-host limit is shared by all workers; this test measures claiming, so it is set out of the way.
    SCHEDULER_LEASE_MS: '30000', WEBHOOK_TIMEOUT_MS: '5000', WEBHOOK_PER_HOST_CONCURRENCY: '96'
  }))
  await sql.raw(`create function test_park_delivery() returns trigger language plpgsql as $$
    begin new.next_attempt_at := '2999-01-01'; return new; end $$`).execute(rt.db)
  await sql.raw('create trigger test_park_deliveries before insert on deliveries for each row execute function test_park_delivery()').execute(rt.db)

  const N = 1000
  rt.clock.set(new Date())
  const createStarted = Date.now()
  let next = 0
  await Promise.all(Array.from({ length: 10 }, async () => {
    while (next < N) {
      next += 1
      await startInstance(rt.db, rt.clock, TRIGGERS_NOTIFY, rt.tenant.id, { templateId, responsibleUserId: rt.worker.id })
    }
  }))
  t.comment(`created ${N} due webhook steps through startInstance in ${Date.now() - createStarted} ms`)
  t.same(await deliveryStatuses(rt), { pending: N })

  await waitUntil('three workers listening for work', async () => {
    const { rows } = await sql<{ n: string }>`select count(*) as n from pg_stat_activity where datname = current_database() and query ilike 'listen %'`.execute(rt.db)
    return Number(rows[0]!.n) === 3
  }, workers, 90_000)
  t.comment(`workers up ${Date.now() - spawnedAt} ms after spawning`)
  await sql`drop trigger test_park_deliveries on deliveries`.execute(rt.db)
  const releasedAt = Date.now()
  await sql`update deliveries set next_attempt_at = now() where status = 'pending'`.execute(rt.db)
  await waitUntil(`${N} deliveries to succeed`, async () => (await deliveryStatuses(rt)).succeeded === N, workers, 90_000)
  const drainedAt = Date.now()
  const calls = rt.provider.calls
  const firstCall = Math.min(...calls.map((c) => c.at))
  const lastCall = Math.max(...calls.map((c) => c.at))
  t.comment(`three workers drained ${N} steps in ${drainedAt - releasedAt} ms (${Math.round(N / ((drainedAt - releasedAt) / 1000))} steps/s);`
    + ` first call ${firstCall - releasedAt} ms after release, calls from first to last ${lastCall - firstCall} ms`)

  t.same(await deliveryStatuses(rt), { succeeded: N }, 'every delivery succeeded')
  t.equal(calls.length, N, 'the provider received exactly one call per step')
  t.equal(new Set(calls.map(deliveryIdOf)).size, N, 'none was called twice')
  t.ok(calls.every((c) => c.signatureValid), 'all signatures are valid')
  t.ok(calls.every((c) => c.headers['idempotency-key'] === c.query.deliveryId), 'each call carries its delivery as Idempotency-Key')

  const steps = await rt.db.selectFrom('instance_steps').select(['state']).execute()
  t.equal(steps.length, N)
  t.ok(steps.every((s) => s.state === 'done'), 'each step is done')
  const instances = await rt.db.selectFrom('process_instances').select('status').where('status', '=', 'completed').execute()
  t.equal(instances.length, N, 'each process completed')

  const attempts = await rt.db.selectFrom('delivery_attempts').select(['attempt_number', 'outcome']).execute()
  t.equal(attempts.length, N, 'one attempt logged per delivery')
  t.ok(attempts.every((a) => a.attempt_number === 1 && a.outcome === 'succeeded'))
  const fences = await rt.db.selectFrom('deliveries').select(['fence', 'attempt_count']).execute()
  t.ok(fences.every((d) => d.fence === 1 && d.attempt_count === 1), 'each delivery was claimed exactly once')
  const claims = await sql<{ owner: string; n: string }>`select owner, count(*) as n from test_claims group by owner order by owner`.execute(rt.db)
  const perWorker = Object.fromEntries(claims.rows.map((r) => [r.owner, Number(r.n)]))
  t.comment(`claims per worker: ${JSON.stringify(perWorker)}`)
  t.equal(Object.values(perWorker).reduce((a, b) => a + b, 0), N, 'claims add up to the steps')
  t.equal(Object.keys(perWorker).length, 3, 'all three workers took part')

  for (const worker of running) worker.child.kill('SIGTERM')
  t.same(await Promise.all(running.map((w) => w.exited)), [0, 0, 0], 'all three stop cleanly')
})

t.test('SIGTERM: a worker lets its call in flight finish and record, then exits 0', async (t) => {
  const rt = await setupRuntime(t)
  const workers = await workersFor(t, rt)
  rt.clock.set(new Date())
  const templateId = await rt.template([{ kind: 'webhook', name: 'Slow ValueCo' }])
  rt.provider.always({ status: 200, body: 'slow but fine', delayMs: 1000 })
  const started = await rt.start(templateId)

  const worker = workers.spawn('worker-term', { SHUTDOWN_GRACE_MS: '10000' })
  await waitUntil('the call to arrive', () => rt.provider.calls.length === 1, workers)
  const call = rt.provider.calls[0]!
  worker.child.kill('SIGTERM')
  const code = await worker.exited
  const exitedAt = Date.now()
  t.equal(code, 0, 'exit code 0')
  t.ok(exitedAt >= call.at + 1000, `exited after the call was answered (${exitedAt - call.at} ms after it arrived)`)

  const view = await rt.instance(started.id)
  t.equal(view.steps[0].state, 'done', 'the step is done')
  t.equal(view.steps[0].delivery.status, 'succeeded', 'the delivery succeeded')
  t.equal(view.status, 'completed')
  const attempts = await rt.db.selectFrom('delivery_attempts').select(['attempt_number', 'outcome', 'status_code', 'response_body']).execute()
  t.same(attempts, [{ attempt_number: 1, outcome: 'succeeded', status_code: 200, response_body: 'slow but fine' }], 'the attempt was recorded')
  t.equal(rt.provider.calls.length, 1)
})

t.test('SIGTERM with calls slower than the grace: each cut-off call is an aborted attempt, counted, and the next worker sends it with the same Idempotency-Key', async (t) => {
  const rt = await setupRuntime(t)
  const workers = await workersFor(t, rt)
  rt.clock.set(new Date())
  const templateId = await rt.template([{ kind: 'webhook', name: 'Very slow ValueCo' }])
  let slow = true
  rt.provider.always(() => ({ status: 200, body: 'fine', delayMs: slow ? 5000 : 0 }))
  const N = 4
  for (let i = 0; i < N; i++) await rt.start(templateId)

  const a = workers.spawn('worker-slow', { SHUTDOWN_GRACE_MS: '300', WEBHOOK_TIMEOUT_MS: '8000', SCHEDULER_LEASE_MS: '20000' })
  await waitUntil(`${N} calls to arrive`, () => rt.provider.calls.length === N, workers)
  a.child.kill('SIGTERM')
  t.equal(await a.exited, 0, 'the worker exits 0 after its grace')

  const cutOff = await rt.db.selectFrom('delivery_attempts').select(['delivery_id', 'attempt_number', 'outcome', 'error']).execute()
  t.equal(cutOff.length, N, 'every call that left is in the attempt log')
  t.ok(cutOff.every((a) => a.attempt_number === 1 && a.outcome === 'aborted' && /shut down/.test(a.error ?? '')), 'as attempt 1, aborted')
  const held = await rt.db.selectFrom('deliveries').select(['status', 'attempt_count', 'lease_owner']).execute()
  t.ok(held.every((d) => d.status === 'pending' && d.attempt_count === 1 && d.lease_owner === null), 'nothing is left leased; each counts one attempt')

  slow = false
  const b = workers.spawn('worker-next')
  await waitUntil('every delivery to succeed', async () => (await deliveryStatuses(rt)).succeeded === N, workers)
  t.equal(rt.provider.calls.length, 2 * N, 'each delivery was sent twice: cut off, then again')
  for (const id of new Set(rt.provider.calls.map(deliveryIdOf))) {
    const calls = rt.provider.calls.filter((c) => deliveryIdOf(c) === id)
    t.same(calls.map((c) => c.headers['idempotency-key']), [id, id], 'with the same Idempotency-Key')
  }
  const log = await rt.db.selectFrom('delivery_attempts').select(['attempt_number', 'outcome']).orderBy('attempt_number').execute()
  t.equal(log.filter((a) => a.attempt_number === 2 && a.outcome === 'succeeded').length, N, 'the second attempt succeeded')
  b.child.kill('SIGTERM')
  t.equal(await b.exited, 0)
})

// A worker stopped while its statements waited on a lock another session held (its call's outcome,
// its next claim, the reaper) waited for each, up to DATABASE_STATEMENT_TIMEOUT_MS (10 s) and again
// after, and then for the pool's close: past the hard limit (grace + 5 s), it exited 1.
t.test('SIGTERM while a call\'s outcome and the claims wait on a lock held elsewhere: cut off after the grace, exit 0, and the call is made again after its lease with the same Idempotency-Key', async (t) => {
  const rt = await setupRuntime(t)
  const workers = await workersFor(t, rt)
  rt.clock.set(new Date())
  const templateId = await rt.template([{ kind: 'webhook', name: 'Locked ValueCo' }])
  rt.provider.always({ status: 200, body: 'fine', delayMs: 300 })
  await rt.start(templateId)

  const a = workers.spawn('worker-locked', { SHUTDOWN_GRACE_MS: '1000', WEBHOOK_TIMEOUT_MS: '2000', SCHEDULER_LEASE_MS: '5000', SCHEDULER_POLL_INTERVAL_MS: '200' })
  await waitUntil('the call to arrive', () => rt.provider.calls.length === 1, workers)
  const held = await holdRow(rt.db, sql`lock table deliveries in access exclusive mode`)
  t.teardown(() => held.release())
  await waitForLockWait(rt.db)
  const signalled = Date.now()
  a.child.kill('SIGTERM')
  t.equal(await a.exited, 0, 'exit 0')
  const took = Date.now() - signalled
  t.ok(took < 4500, `exited ${took} ms after the signal: the grace and the cut-off writes, not the hard limit (6 s)`)
  t.notMatch(a.output(), /did not finish in time/)
  await held.release()

  const b = workers.spawn('worker-after')
  await waitUntil('the delivery to succeed', async () => (await deliveryStatuses(rt)).succeeded === 1, workers)
  const id = deliveryIdOf(rt.provider.calls[0]!)
  t.same(rt.provider.calls.map((c) => c.headers['idempotency-key']), [id, id], 'made again once, with the same Idempotency-Key')
  const log = await rt.db.selectFrom('delivery_attempts').select(['attempt_number', 'outcome']).orderBy('attempt_number').execute()
  t.same(log, [{ attempt_number: 1, outcome: 'aborted' }, { attempt_number: 2, outcome: 'succeeded' }], 'the cut-off call is an aborted attempt')
  t.same(await rt.db.selectFrom('deliveries').select('lease_owner').execute(), [{ lease_owner: null }], 'nothing left leased')
  b.child.kill('SIGTERM')
  t.equal(await b.exited, 0)
})

t.test('kill -9: the dead worker\'s per-host slots are free at once, while its claims wait for the lease', async (t) => {
  const rt = await setupRuntime(t)
  const workers = await workersFor(t, rt)
  rt.clock.set(new Date())
  const templateId = await rt.template([{ kind: 'webhook', name: 'Hold the line' }])
  // Worker A's calls hang until A is gone; afterwards the provider answers at once.
  let holding = true
  let release: () => void = () => {}
  const released = new Promise<void>((resolve) => { release = resolve })
  rt.provider.always((): Reply | Promise<Reply> => holding ? released.then(() => ({ status: 200, body: 'too late' })) : { status: 200, body: 'ok' })
  t.teardown(() => release())
  const limits = { WEBHOOK_PER_HOST_CONCURRENCY: '2', SCHEDULER_CONCURRENCY: '2', SCHEDULER_LEASE_MS: '20000', WEBHOOK_TIMEOUT_MS: '15000' }
  await rt.start(templateId)
  await rt.start(templateId)
  const a = workers.spawn('worker-doomed', limits)
  await waitUntil('worker A to hold both slots', () => rt.provider.calls.length === 2, workers)
  a.child.kill('SIGKILL')
  await a.exited
  const killedAt = Date.now()
  holding = false
  release()
  await rt.start(templateId)
  await rt.start(templateId)
  workers.spawn('worker-next', limits)
  await waitUntil('the two new deliveries to succeed', async () => (await deliveryStatuses(rt)).succeeded === 2, workers)
  const took = Date.now() - killedAt
  t.comment(`the host was called again ${took} ms after the kill (lease 20000 ms)`)
  t.ok(took < 15_000, `worker B called the host ${took} ms after the kill, long before A's 20 s lease ran out: the slots came back at once`)
  const statuses = await deliveryStatuses(rt)
  t.same(statuses, { running: 2, succeeded: 2 }, 'A\'s own claims still wait for their lease')
})

t.test('a worker paused past its lease (SIGSTOP) and resumed: another worker took its calls over, and the paused one\'s late outcomes are fenced out', async (t) => {
  const rt = await setupRuntime(t)
  const workers = await workersFor(t, rt)
  rt.clock.set(new Date())
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Ask ValueCo', refersTo: { property: true } },
    { kind: 'task', name: 'Read the valuation' }
  ])
  const N = 4
  for (let i = 0; i < N; i++) await rt.start(templateId)
  // Worker A's calls hang until released, then answer 503 (a retry, had it counted); worker B's succeed at once.
  let holding = true
  let release: () => void = () => {}
  const released = new Promise<void>((resolve) => { release = resolve })
  rt.provider.always((): Reply | Promise<Reply> => holding ? released.then(() => ({ status: 503, body: 'stale' })) : { status: 200, body: 'ok' })
  t.teardown(() => release())
  const settings = { SCHEDULER_LEASE_MS: '3500', WEBHOOK_TIMEOUT_MS: '2500', SCHEDULER_POLL_INTERVAL_MS: '200', LOG_LEVEL: 'info' }

  const a = workers.spawn('worker-paused', settings)
  await waitUntil(`${N} calls from worker A`, () => rt.provider.calls.length >= N, workers)
  a.child.kill('SIGSTOP')
  holding = false
  const b = workers.spawn('worker-b', settings)
  await waitUntil('worker B to take every call over after A\'s lease', async () => (await deliveryStatuses(rt)).succeeded === N, workers)
  // A's held calls are answered while it still sleeps; it wakes to them (or to its timeouts) with claims it no longer holds.
  release()
  await new Promise((resolve) => setTimeout(resolve, 300))
  a.child.kill('SIGCONT')
  await waitUntil('worker A to see the end of its calls', () => (a.output().match(/"webhook call"/g) ?? []).length >= N, workers)
  a.child.kill('SIGTERM')
  t.equal(await a.exited, 0, 'worker A drains and exits cleanly')
  b.child.kill('SIGTERM')
  t.equal(await b.exited, 0)

  t.same(await deliveryStatuses(rt), { succeeded: N }, 'every delivery stays succeeded: no stale retry put one back in the queue')
  const attempts = await rt.db.selectFrom('delivery_attempts').select(['delivery_id', 'attempt_number', 'outcome']).orderBy('delivery_id').orderBy('attempt_number').execute()
  const logs = new Map<string, string[]>()
  for (const attempt of attempts) logs.set(attempt.delivery_id, [...(logs.get(attempt.delivery_id) ?? []), `${attempt.attempt_number}:${attempt.outcome}`])
  t.same([...logs.values()], Array.from({ length: N }, () => ['1:aborted', '2:succeeded']), 'each log: the lease expiring, then B\'s success; A\'s late outcome is not logged')
  const calls = new Map<string, number>()
  for (const call of rt.provider.calls) calls.set(deliveryIdOf(call)!, (calls.get(deliveryIdOf(call)!) ?? 0) + 1)
  t.same([...calls.values()], Array.from({ length: N }, () => 2), 'each delivery was called twice: by A before its pause, by B after the lease')
  const steps = await rt.db.selectFrom('instance_steps').select(['position', 'state']).execute()
  t.equal(steps.filter((s) => s.position === 1 && s.state === 'done').length, N, 'every webhook step is done')
  t.equal(steps.filter((s) => s.position === 2 && s.state === 'due').length, N, 'and its next step started once')
  const activities = await sql<{ kind: string; n: number }>`select kind, count(*)::int as n from activities where kind in ('webhookSucceeded', 'stepDone') group by kind order by kind`.execute(rt.db)
  t.same(activities.rows, [{ kind: 'stepDone', n: N }, { kind: 'webhookSucceeded', n: N }], 'one success and one end per step in the activity log')
})
