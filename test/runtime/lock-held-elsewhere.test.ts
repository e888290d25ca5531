// An operator's lock on a table the scheduler writes (LOCK TABLE, VACUUM FULL, ALTER TABLE) held for
// several statement timeouts while a call's outcome waits to be written: the worker backs off rather
// than spins, and once the lock ends the outcome is written once and the next step's call follows.
// The test clock stands still, so no lease runs out: what an expired lease forces is not in play here.
import t from 'tap'
import pg from 'pg'
import type { Logger } from '../../src/lib/logger.js'
import { claimDeliveries, type ClaimedDelivery } from '../../src/scheduler/claim-deliveries.js'
import { OutcomeBatcher } from '../../src/scheduler/outcome-batcher.js'
import type { AttemptRecord } from '../../src/scheduler/record-outcome.js'
import { setupRuntime } from '../helpers/runtime.js'
import { waitForLockWait } from '../helpers/database.js'

const STATEMENT_TIMEOUT_MS = 300
const LOCK_MS = 5 * STATEMENT_TIMEOUT_MS

const rt = await setupRuntime(t, { env: { DATABASE_STATEMENT_TIMEOUT_MS: String(STATEMENT_TIMEOUT_MS) } })
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

t.test('a lock on instance_steps held for five statement timeouts: the outcome waits, is written once after it, and the next step is called', async (t) => {
  rt.clock.set(new Date())
  const templateId = await rt.template([{ kind: 'webhook', name: 'First' }, { kind: 'webhook', name: 'Second' }])
  let answer: () => void = () => {}
  const answered = new Promise<void>((resolve) => { answer = resolve })
  rt.provider.queue(() => answered.then(() => ({ status: 200, body: 'first' })))
  rt.provider.always({ status: 200, body: 'second' })
  const lines: { level: string; msg: string | undefined }[] = []
  const log: Logger = {
    info: (_obj, msg) => lines.push({ level: 'info', msg }),
    warn: (_obj, msg) => lines.push({ level: 'warn', msg }),
    error: (_obj, msg) => lines.push({ level: 'error', msg })
  }
  const scheduler = rt.newScheduler({ pollIntervalMs: 50 }, log)
  t.teardown(() => scheduler.stop(1000))
  const { id } = await rt.start(templateId)
  await scheduler.start()
  for (let i = 0; rt.provider.calls.length === 0; i++) {
    if (i > 200) throw new Error('the first call never came')
    await sleep(10)
  }

  // The operator's session: no statement timeout, as psql's.
  const operator = new pg.Client({ connectionString: rt.databaseUrl, options: '-c statement_timeout=0 -c idle_in_transaction_session_timeout=0' })
  await operator.connect()
  t.teardown(() => operator.end())
  await operator.query('begin')
  await operator.query('lock table instance_steps in access exclusive mode')
  answer()
  await waitForLockWait(rt.db)
  const linesBefore = lines.length
  await sleep(LOCK_MS)
  t.equal(rt.provider.calls.length, 1, 'no call while the outcome cannot be written')
  await operator.query('commit')
  const releasedAt = Date.now()
  const during = lines.slice(linesBefore)

  for (let i = 0; rt.provider.calls.length < 2; i++) {
    if (i > 500) throw new Error('the second call never came')
    await sleep(10)
  }
  const resumedMs = Date.now() - releasedAt
  for (let i = 0; (await rt.instance(id)).status !== 'completed'; i++) {
    if (i > 200) throw new Error('the process did not complete')
    await sleep(10)
  }
  t.ok(resumedMs < 2 * STATEMENT_TIMEOUT_MS + 2000, `the next step was called ${resumedMs} ms after the lock ended: within the backoff's 2 s`)
  t.equal(rt.provider.calls.length, 2, 'one call per step')
  const attempts = await rt.db.selectFrom('delivery_attempts').select(['delivery_id', 'outcome']).execute()
  t.same(attempts.map((a) => a.outcome), ['succeeded', 'succeeded'], 'each call logged once, as it ended')
  t.equal(new Set(attempts.map((a) => a.delivery_id)).size, 2)
  const activities = await rt.db.selectFrom('activities').select('kind').where('kind', '=', 'webhookSucceeded').execute()
  t.equal(activities.length, 2, 'one activity per step')
  // Each try of a pass, a chore or the outcome batch waits out a statement timeout, then backs off 100 ms doubling:
  // a spinning worker would log on every try.
  t.same(during.filter((l) => l.level === 'error'), [], 'nothing logged as an error')
  t.ok(during.length <= 10, `${during.length} lines logged in ${LOCK_MS} ms of lock: ${JSON.stringify(during.map((l) => l.msg))}`)
})

t.test('a process row a report holds FOR UPDATE: the other outcomes of its batch are written at once, its own once the row is free', async (t) => {
  rt.clock.set(new Date())
  const templateId = await rt.template([{ kind: 'webhook', name: 'Held or not' }])
  const [held, free] = [await rt.start(templateId), await rt.start(templateId)]
  const claimedAt = rt.clock.now()
  const claims = await claimDeliveries(rt.db, { workerId: 'worker-held', now: claimedAt, leaseMs: 60_000, limit: 10 })
  t.equal(claims.length, 2)
  const record = (claim: ClaimedDelivery): AttemptRecord => ({
    delivery: claim, startedAt: claimedAt, durationMs: 5, statusCode: 200, error: null, responseBody: 'ok', decision: { action: 'succeed' }, outcome: 'succeeded'
  })
  const report = new pg.Client({ connectionString: rt.databaseUrl, options: '-c statement_timeout=0 -c idle_in_transaction_session_timeout=0' })
  await report.connect()
  t.teardown(() => report.end())
  await report.query('begin')
  await report.query('select id from process_instances where id = $1 for update', [held.id])

  const batcher = new OutcomeBatcher(rt.db, rt.clock)
  const until = new Date(claimedAt.getTime() + 60_000)
  const [heldOutcome, freeOutcome] = [held, free].map((p) => batcher.record(record(claims.find((c) => c.instanceId === p.id)!), until))
  // Guards of real time: before, the free one waited with the held one, a statement timeout a try, until the row was free.
  const within = <T>(ms: number, promise: Promise<T>) => Promise.race([promise, sleep(ms).then(() => 'not yet')])
  t.equal(await within(2000, freeOutcome!), 'recorded', 'the free process\'s outcome is written while the other\'s row is held')
  t.equal((await rt.instance(free.id)).status, 'completed')
  t.equal(await within(300, heldOutcome!), 'not yet', 'the held one waits')
  await report.query('commit')
  t.equal(await within(3000, heldOutcome!), 'recorded', 'and is written once the row is free')
  t.equal((await rt.instance(held.id)).status, 'completed')
  const attempts = await rt.db.selectFrom('delivery_attempts').select(['delivery_id', 'outcome'])
    .where('delivery_id', 'in', claims.map((c) => c.id)).execute()
  t.same(attempts.map((a) => a.outcome), ['succeeded', 'succeeded'], 'each logged once')
})

t.test('outcomes whose process rows a report holds are tried again on their own: those recorded after them never wait for their rows', async (t) => {
  rt.clock.set(new Date())
  const templateId = await rt.template([{ kind: 'webhook', name: 'Held or not' }])
  const held = await Promise.all(Array.from({ length: 20 }, () => rt.start(templateId)))
  const free = await Promise.all(Array.from({ length: 8 }, () => rt.start(templateId)))
  const claimedAt = rt.clock.now()
  const claims = await claimDeliveries(rt.db, { workerId: 'worker-many-held', now: claimedAt, leaseMs: 60_000, limit: 40 })
  t.equal(claims.length, 28)
  const record = (claim: ClaimedDelivery): AttemptRecord => ({
    delivery: claim, startedAt: claimedAt, durationMs: 5, statusCode: 200, error: null, responseBody: 'ok', decision: { action: 'succeed' }, outcome: 'succeeded'
  })
  const claimOf = (id: string) => claims.find((c) => c.instanceId === id)!
  const report = new pg.Client({ connectionString: rt.databaseUrl, options: '-c statement_timeout=0 -c idle_in_transaction_session_timeout=0' })
  await report.connect()
  t.teardown(() => report.end())
  await report.query('begin')
  await report.query('select id from process_instances where id = any($1::uuid[]) for update', [held.map((p) => p.id)])

  const batcher = new OutcomeBatcher(rt.db, rt.clock)
  const until = new Date(claimedAt.getTime() + 60_000)
  const heldOutcomes = held.map((p) => batcher.record(record(claimOf(p.id)), until))
  // The held ones meet their rows once, each alone, then wait their backoffs (0.1 s doubling to 2 s) on their own.
  // Each lock wait is half the statement timeout: before, each outcome recorded later joined a batch with those whose
  // backoff had ended, which waited for each of their rows in turn (20 of them, 3 s).
  await sleep(20 * STATEMENT_TIMEOUT_MS)
  const waits: number[] = []
  for (const p of free) {
    const startedAt = performance.now()
    t.equal(await batcher.record(record(claimOf(p.id)), until), 'recorded')
    waits.push(Math.round(performance.now() - startedAt))
    await sleep(250)
  }
  t.ok(Math.max(...waits) < 4 * STATEMENT_TIMEOUT_MS, `each written without waiting for the held rows: ${JSON.stringify(waits)} ms`)
  await report.query('commit')
  t.same(await Promise.all(heldOutcomes), held.map(() => 'recorded'), 'the held ones are written once their rows are free')
  const attempts = await rt.db.selectFrom('delivery_attempts').select('outcome').where('delivery_id', 'in', claims.map((c) => c.id)).execute()
  t.equal(attempts.length, 28, 'each logged once')
})

t.test('the lock wait ends with the statements that lock: the outcome\'s changes and its commit wait as the session\'s other statements do', async (t) => {
  rt.clock.set(new Date())
  const templateId = await rt.template([{ kind: 'webhook', name: 'Seen' }, { kind: 'task', name: 'Next' }])
  const started = await rt.start(templateId)
  const claimedAt = rt.clock.now()
  const [claim] = await claimDeliveries(rt.db, { workerId: 'worker-seen', now: claimedAt, leaseMs: 60_000, limit: 10 })
  // What the changes' statements see: a trigger on the activities they write notes the session's lock timeout.
  const admin = new pg.Client({ connectionString: rt.databaseUrl })
  await admin.connect()
  t.teardown(() => admin.end())
  await admin.query(`create table lock_waits_seen (lock_timeout text);
    create function note_lock_wait() returns trigger language plpgsql as $$
      begin insert into lock_waits_seen values (current_setting('lock_timeout')); return null; end $$;
    create trigger note_lock_wait after insert on activities for each statement execute function note_lock_wait()`)
  t.teardown(() => admin.query('drop trigger note_lock_wait on activities; drop function note_lock_wait(); drop table lock_waits_seen'))
  const batcher = new OutcomeBatcher(rt.db, rt.clock)
  t.equal(await batcher.record({
    delivery: claim!, startedAt: claimedAt, durationMs: 5, statusCode: 200, error: null, responseBody: 'ok', decision: { action: 'succeed' }, outcome: 'succeeded'
  }, new Date(claimedAt.getTime() + 60_000)), 'recorded')
  t.equal((await rt.instance(started.id)).steps[1].state, 'due')
  const seen = (await admin.query<{ lock_timeout: string }>('select lock_timeout from lock_waits_seen')).rows
  t.ok(seen.length > 0, 'the changes wrote activities')
  t.same(seen.map((s) => s.lock_timeout), seen.map(() => '0'), 'without the lock wait of the statements that lock')
})
