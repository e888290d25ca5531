// The per-host limit holds across worker processes: two real workers (`src/server.ts --role=worker`)
// on one Postgres, a provider that holds every call, and never more than the limit open at once.
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openPostgres } from '../../src/db/connect.js'
import { sql } from '../../src/db/kysely.js'
import t, { type Test } from 'tap'
import { hostKey } from '../../src/lib/host-key.js'
import { HostSlots } from '../../src/scheduler/host-slots.js'
import { runScript, workerEnv, type RunningProcess } from '../helpers/process.js'
import { TestProvider } from '../helpers/provider.js'
import { hostLimitedScheduler, setupRuntime, type RuntimeContext } from '../helpers/runtime.js'

t.setTimeout(180_000)

const LIMIT = 3
const HOLD_MS = 300
const N = 24

/**
 * Calls a provider holds until the test answers them: `held` waits for the test's answer (at once
 * after `answerAll`, which the teardown calls too).
 */
function heldAnswers(t: Test) {
  const answers: (() => void)[] = []
  let answering = false
  const answerAll = () => {
    answering = true
    for (const answer of answers) answer()
  }
  t.teardown(answerAll)
  const held = () => answering ? Promise.resolve() : new Promise<void>((resolve) => answers.push(resolve))
  return { answers, held, answerAll }
}

t.test('two workers never have more than WEBHOOK_PER_HOST_CONCURRENCY calls open at one host, and waiting uses no attempt', async (t) => {
  const rt = await setupRuntime(t)
  const { rows } = await sql<{ name: string }>`select current_database() as name`.execute(rt.db)
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-host-limit-'))
  const workers: RunningProcess[] = []
  const logs = () => workers.map((w, i) => `--- worker ${i} ---\n${w.output()}`).join('\n')
  t.teardown(async () => {
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL')
    await Promise.all(workers.map((w) => w.exited))
    if (!t.passing()) process.stderr.write(`${logs()}\n`)
    await rm(dataDir, { recursive: true, force: true })
  })
  await sql`create table test_claims (delivery_id uuid not null, owner text not null)`.execute(rt.db)
  await sql.raw(`create function test_log_claim() returns trigger language plpgsql as $$
    begin insert into test_claims values (new.id, new.lease_owner); return null; end $$`).execute(rt.db)
  await sql.raw(`create trigger test_claims_log after update of lease_owner on deliveries
    for each row when (new.lease_owner is not null) execute function test_log_claim()`).execute(rt.db)

  let open = 0
  let maxOpen = 0
  rt.provider.always(async () => {
    open += 1
    maxOpen = Math.max(maxOpen, open)
    await new Promise((resolve) => setTimeout(resolve, HOLD_MS))
    open -= 1
    return { status: 200, body: 'ok' }
  })

  for (const name of ['worker-a', 'worker-b']) {
    workers.push(runScript('src/server.ts', {
      ...workerEnv(rows[0]!.name, dataDir, name),
      // The guard stays on; the allow-list lets the calls reach the provider on loopback.
      WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'false',
      WEBHOOK_ALLOWED_TARGETS: '127.0.0.1/32',
      WEBHOOK_PER_HOST_CONCURRENCY: String(LIMIT),
      SCHEDULER_CONCURRENCY: '8',
      SCHEDULER_POLL_INTERVAL_MS: '200'
    }, ['--role=worker']))
  }
  await until('both workers listening for work', async () => {
    const { rows } = await sql<{ n: string }>`select count(*) as n from pg_stat_activity where datname = current_database() and query ilike 'listen %'`.execute(rt.db)
    return Number(rows[0]!.n) === 2
  }, logs, 90_000)

  rt.clock.set(new Date())
  const templateId = await rt.template([{ kind: 'webhook', name: 'Hold the line' }])
  const started = Date.now()
  for (let i = 0; i < N; i++) await rt.start(templateId)
  await until(`${N} deliveries to succeed`, async () => {
    const done = await rt.db.selectFrom('deliveries').select((eb) => eb.fn.countAll<string>().as('n')).where('status', '=', 'succeeded').executeTakeFirstOrThrow()
    return Number(done.n) === N
  }, logs, 90_000)
  t.comment(`${N} calls held ${HOLD_MS} ms each, at most ${LIMIT} at a time: done in ${Date.now() - started} ms`)

  t.ok(maxOpen <= LIMIT, `never more than ${LIMIT} calls open at the provider (at most ${maxOpen})`)
  t.equal(maxOpen, LIMIT, 'and the limit was used in full')
  t.equal(rt.provider.calls.length, N, 'each delivery was called once')
  t.equal(new Set(rt.provider.calls.map((c) => c.query.deliveryId)).size, N)

  const deliveries = await rt.db.selectFrom('deliveries').select(['status', 'attempt_count']).execute()
  t.ok(deliveries.every((d) => d.status === 'succeeded' && d.attempt_count === 1), 'every delivery succeeded at attempt 1: waiting used no attempt')
  const attempts = await rt.db.selectFrom('delivery_attempts').select(['attempt_number', 'outcome']).execute()
  t.equal(attempts.length, N, 'the attempt log holds one attempt per delivery and no failure')
  t.ok(attempts.every((a) => a.attempt_number === 1 && a.outcome === 'succeeded'))

  const claims = await sql<{ owner: string; n: string }>`select owner, count(*) as n from test_claims group by owner order by owner`.execute(rt.db)
  const perWorker = Object.fromEntries(claims.rows.map((r) => [r.owner, Number(r.n)]))
  t.comment(`claims per worker: ${JSON.stringify(perWorker)}`)
  t.same(Object.keys(perWorker), ['worker-a', 'worker-b'], 'both workers took part')
  t.ok(Object.values(perWorker).reduce((a, b) => a + b, 0) >= N, 'every delivery was claimed')

  for (const w of workers) w.child.kill('SIGTERM')
  t.same(await Promise.all(workers.map((w) => w.exited)), [0, 0], 'both workers stop cleanly')
  const { rows: locks } = await sql<{ n: number }>`
    select count(*)::int as n from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())
  `.execute(rt.db)
  t.equal(locks[0]!.n, 0, 'every slot was freed')
})

t.test('a worker claims no more for a full host than the calls waiting there leave room for: no claim goes back unused but the first', async (t) => {
  const rt = await setupRuntime(t)
  // Two calls at a time and two waiting may be at the host; the worker has room for eight.
  const scheduler = hostLimitedScheduler(t, rt, { perHostConcurrency: 2, concurrency: 8 })
  rt.provider.always(async () => {
    await new Promise((resolve) => setTimeout(resolve, 100))
    return { status: 200, body: 'ok' }
  })
  const templateId = await rt.template([{ kind: 'webhook', name: 'One host, a backlog' }])
  for (let i = 0; i < 12; i++) await rt.start(templateId)

  const run = await scheduler.runOnce()
  t.equal(rt.provider.calls.length, 12, 'every delivery was called once')
  // The first claim (eight) finds the host full only once it asks: two call, two wait, four go back.
  // Every later claim takes no more than the line's free places.
  t.ok(run.deliveries <= 12 + 4, `claims beyond the twelve calls: only the first claim's four (${run.deliveries} claims in all)`)
  const { rows: [fences] } = await sql<{ claims: number }>`select sum(fence)::int as claims from deliveries`.execute(rt.db)
  t.equal(fences!.claims, run.deliveries, 'each claim raised a fence')
  const attempts = await rt.db.selectFrom('deliveries').select('attempt_count').where('status', '=', 'succeeded').execute()
  t.same(attempts.map((a) => a.attempt_count), Array(12).fill(1), 'waiting and going back used no attempt')
})

t.test('a call that waited for its host\'s slot is signed, and its apiClaim dated, when it is sent, not when it was claimed', async (t) => {
  const rt = await setupRuntime(t)
  const scheduler = hostLimitedScheduler(t, rt, { perHostConcurrency: 1, concurrency: 4 })
  const WAITED_MS = 30_000
  // The first call holds the host's one slot while the clock moves on; the second waits in line for it.
  rt.provider.queue(async () => {
    rt.clock.advance(WAITED_MS)
    await new Promise((resolve) => setTimeout(resolve, 200))
    return { status: 200, body: 'ok' }
  })
  const templateId = await rt.template([{ kind: 'webhook', name: 'One slot' }])
  const claimedAt = Math.floor(rt.clock.now().getTime() / 1000)
  for (let i = 0; i < 2; i++) await rt.start(templateId)

  await scheduler.runOnce()
  t.equal(rt.provider.calls.length, 2, 'both deliveries were called')
  const [first, second] = rt.provider.calls.map((call) => call.query)
  const claimExpiry = (apiClaim: string) => (JSON.parse(Buffer.from(apiClaim.slice('bcl_'.length, apiClaim.lastIndexOf('.')), 'base64url').toString()) as { exp: number }).exp
  t.equal(Number(first!.timestamp), claimedAt, 'the first call went out at once')
  t.equal(Number(second!.timestamp), claimedAt + WAITED_MS / 1000, 'the second call\'s timestamp is the time it was sent')
  t.equal(claimExpiry(second!.apiClaim!), Number(second!.timestamp) + 15 * 60, 'and its apiClaim runs 15 minutes from then')
  t.ok(rt.provider.calls.every((call) => call.signatureValid), 'both verify')
  const attempts = await rt.db.selectFrom('delivery_attempts').select('started_at').orderBy('started_at').execute()
  t.same(attempts.map((a) => a.started_at.getTime() / 1000), [claimedAt, claimedAt + WAITED_MS / 1000], 'each attempt is logged at the time its call started')
})

/** Until the worker has asked for a host slot since `since` and found none free: its call waits in the host's line. */
async function untilWaitingForSlot(rt: RuntimeContext, since: Date, log: () => string): Promise<void> {
  await until('the first call waiting for a slot', async () => {
    const { rows: [row] } = await sql<{ n: number }>`
      select count(*)::int as n from pg_stat_activity
      where datname = current_database() and query like '%try_host_slot%' and state = 'idle' and query_start > ${since} and pid <> pg_backend_pid()`.execute(rt.db)
    return row!.n > 0
  }, log, 5_000)
}

/**
 * A worker with one slot per host, whose service's host holds every call until `release()`: one call
 * is open there and its line is full. `moved` is the provider the service's URL is to move to.
 */
async function oldHostHeld(t: Test) {
  const rt = await setupRuntime(t, { webhookTimeoutMs: 30_000 })
  const scheduler = hostLimitedScheduler(t, rt, { perHostConcurrency: 1, concurrency: 8 })
  const moved = await TestProvider.start(rt.secret)
  t.teardown(() => moved.close())
  let release = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  rt.provider.always(async () => {
    await held
    return { status: 200, body: 'ok' }
  })
  t.teardown(() => release())
  const templateId = await rt.template([{ kind: 'webhook', name: 'Ask the provider' }])
  for (let i = 0; i < 3; i++) await rt.start(templateId)
  await scheduler.start()
  await until('a call open at the old host', async () => rt.provider.calls.length === 1, () => '', 10_000)
  return { rt, scheduler, moved, templateId, release }
}

t.test('a service whose webhookUrl moved to another host is claimed by the host it now calls, not held back behind the old one', async (t) => {
  // The old host holds every call until the end: its one slot is taken and its line full.
  const { rt, scheduler, moved, templateId, release } = await oldHostHeld(t)

  const patched = await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { webhookUrl: `${moved.url}/hooks/valuation?v=2` })
  t.equal(patched.statusCode, 200, patched.body)
  await rt.start(templateId)
  scheduler.wake()
  // Queued before the move or after, a delivery not yet claimed calls the service's URL as it is now,
  // and at the new host, whose slot is free; the old host's full line is not its line any more.
  await until('calls at the new host', async () => moved.calls.length >= 2, () => `calls at the new host: ${moved.calls.length}`, 3_000)
  t.ok(moved.calls.every((call) => call.signatureValid && new URL(call.url).pathname === '/hooks/valuation'), 'signed, to the new URL')
  t.equal(rt.provider.calls.length, 1, 'the old host got no other call meanwhile')
  release()
  // The one claimed before the move, waiting at the worker for the old host's slot, goes where it was claimed for.
  await until('the waiting call at the old host', async () => rt.provider.calls.length === 2, () => '', 5_000)
  t.equal(moved.calls.length, 2, 'and no more at the new host')
})

t.test('a moved service is claimed by its new host also when the clock was stepped back since its URL was last read', async (t) => {
  const wallNow = Date.now
  t.teardown(() => { Date.now = wallNow })
  const { rt, scheduler, moved, templateId } = await oldHostHeld(t)
  // The passes meanwhile (every 50 ms) read the held service's URL, as it was.
  await new Promise((resolve) => setTimeout(resolve, 300))
  // The machine's clock is stepped back a minute.
  Date.now = () => wallNow() - 60_000

  const patched = await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { webhookUrl: `${moved.url}/hooks/valuation?v=2` })
  t.equal(patched.statusCode, 200, patched.body)
  await rt.start(templateId)
  scheduler.wake()
  // Its URL is read again a second (HELD_SERVICES_REREAD_MS) after the last read, not a minute.
  await until('calls at the new host', async () => moved.calls.length >= 2, () => `calls at the new host: ${moved.calls.length}`, 3_000)
  t.equal(rt.provider.calls.length, 1, 'the old host got no other call meanwhile')
})

t.test('a full host whose claim apart came back short is claimed apart again soon also when the clock was stepped back meanwhile', async (t) => {
  const rt = await setupRuntime(t, { webhookTimeoutMs: 30_000 })
  const wallNow = Date.now
  t.teardown(() => { Date.now = wallNow })
  const scheduler = hostLimitedScheduler(t, rt, { perHostConcurrency: 2, concurrency: 8 }, 4)
  const full = await otherHost(t, rt, 'Full host', 2)
  full.always(() => ({ status: 200, body: 'ok' }))
  const host = hostKey(full.url)!
  // Only the first is due: the second falls due once the worker has claimed apart and found nothing.
  const { rows: [first] } = await sql<{ id: string }>`
    select id from deliveries where target_host = ${host} order by next_attempt_at, id limit 1`.execute(rt.db)
  await sql`update deliveries set next_attempt_at = next_attempt_at + interval '1 hour' where id <> ${first!.id}`.execute(rt.db)
  // Another worker holds every slot of the host.
  const pool = openPostgres(rt.databaseUrl, { poolMax: 1 })
  t.teardown(() => pool.close())
  const other = new HostSlots(() => pool.session({ timeouts: true }), 2, () => {})
  const taken = [await other.acquire(host, 0), await other.acquire(host, 0)]
  t.ok(taken.every(Boolean), 'the other worker holds the host\'s slots')
  t.teardown(async () => {
    for (const slot of taken) other.release(slot!)
    await other.close()
  })
  const { rows: [started] } = await sql<{ at: Date }>`select clock_timestamp() as at`.execute(rt.db)
  await scheduler.start()

  const log = () => `calls at the host: ${full.calls.length}`
  await untilWaitingForSlot(rt, started!.at, log)
  // Its line has a place left: the passes meanwhile (every 50 ms) claim apart for the host, and come back short.
  await new Promise((resolve) => setTimeout(resolve, 500))
  // The machine's clock is stepped back a minute.
  Date.now = () => wallNow() - 60_000
  await sql`update deliveries set next_attempt_at = next_attempt_at - interval '1 hour' where id <> ${first!.id}`.execute(rt.db)
  scheduler.wake()
  // The host rests APART_REST_MS (200 ms) after a short claim, not a minute.
  await until('the second delivery claimed apart', async () => (await deliveriesIn('running', rt)) === 2, log, 3_000)
  t.equal(full.calls.length, 0, 'both wait at the worker for a slot')
  const { rows: [fences] } = await sql<{ claims: number }>`select sum(fence)::int as claims from deliveries`.execute(rt.db)
  t.equal(fences!.claims, 2, 'each was claimed once')
})

t.test('a call waiting for a full host takes no place of SCHEDULER_CONCURRENCY: hosts that hang do not stop the others', async (t) => {
  const rt = await setupRuntime(t, { webhookTimeoutMs: 30_000 })
  // Each hanging host has its two calls open and two waiting: three such hosts are twelve calls, past
  // the worker's eight places when a waiting call took one.
  const scheduler = hostLimitedScheduler(t, rt, { perHostConcurrency: 2, concurrency: 8 }, 4)
  let release = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  t.teardown(() => release())
  const hanging: TestProvider[] = []
  for (let i = 0; i < 3; i++) {
    const provider = await otherHost(t, rt, `Hangs ${i}`, 4)
    provider.always(async () => {
      await held
      return { status: 200, body: 'ok' }
    })
    hanging.push(provider)
    // Due one after another, so the worker claims the hanging hosts' calls first.
    rt.clock.advance(1000)
  }
  const templateId = await rt.template([{ kind: 'webhook', name: 'Answers at once' }])
  for (let i = 0; i < 10; i++) await rt.start(templateId)
  await scheduler.start()

  const calls = () => `calls at the hanging hosts: ${hanging.map((p) => p.calls.length).join(', ')}; at the other host: ${rt.provider.calls.length}`
  await until('the other host\'s ten calls', async () => rt.provider.calls.length === 10, calls, 10_000)
  // Their outcomes are written after the calls end: until then their deliveries read running too.
  await until('the ten calls recorded', async () => (await deliveriesIn('succeeded', rt)) === 10, calls, 5_000)
  t.same(hanging.map((p) => p.calls.length), [2, 2, 2], 'each hanging host has its two calls open, and no more')
  t.equal(await deliveriesIn('running', rt), 12, 'and two waiting at the worker')
})

t.test('a call given its host\'s slot while every place is taken takes the next place that comes free, before newer calls', async (t) => {
  const rt = await setupRuntime(t, { webhookTimeoutMs: 30_000 })
  const scheduler = hostLimitedScheduler(t, rt, { perHostConcurrency: 2, concurrency: 2 }, 4)
  const received: string[] = []
  // The busy host holds each call until the test answers it.
  const { answers, held, answerAll } = heldAnswers(t)
  rt.provider.always(async () => {
    received.push('busy')
    await held()
    return { status: 200, body: 'ok' }
  })
  const full = await otherHost(t, rt, 'Full host', 1)
  full.always(() => {
    received.push('full')
    return { status: 200, body: 'ok' }
  })
  // Another worker holds both slots of the full host.
  const pool = openPostgres(rt.databaseUrl, { poolMax: 1 })
  t.teardown(() => pool.close())
  const other = new HostSlots(() => pool.session({ timeouts: true }), 2, () => {})
  const host = hostKey(full.url)!
  const taken = [await other.acquire(host, 0), await other.acquire(host, 0)]
  t.ok(taken.every(Boolean), 'the other worker holds the full host\'s slots')
  rt.clock.advance(1000)
  const templateId = await rt.template([{ kind: 'webhook', name: 'Busy host' }])
  for (let i = 0; i < 6; i++) await rt.start(templateId)
  await scheduler.start()

  const log = () => `received: ${received.join(', ')}`
  await until('both places at the busy host while the full host\'s call waits', async () => answers.length === 2, log, 5_000)
  for (const slot of taken) other.release(slot!)
  await other.close()
  // The worker's poll finds a slot free: its call has it, and waits for a place.
  await until('the worker holding a slot of the full host', async () => {
    const { rows: [row] } = await sql<{ n: number }>`
      select count(*)::int as n from pg_locks
      where locktype = 'advisory' and granted and classid::text::bigint = (hashtext(${host})::bigint & 4294967295)
    `.execute(rt.db)
    return row!.n === 1
  }, log, 5_000)
  t.same(received, ['busy', 'busy'], 'no place for it yet')
  answers[0]!()
  await until('the next call', async () => received.length >= 3, log, 5_000)
  t.equal(received[2], 'full', 'the freed place went to the call that had its slot, not to a newer call')
  answerAll()
  await until('every delivery done', async () => (await deliveriesIn('succeeded', rt)) === 7, log, 10_000)
  const attempts = await rt.db.selectFrom('deliveries').select('attempt_count').execute()
  t.same(attempts.map((a) => a.attempt_count), Array(7).fill(1), 'waiting for a slot and for a place used no attempt')
})

t.test('calls given their host\'s slot while a claim runs take room from the next claim: never more calls open than SCHEDULER_CONCURRENCY', async (t) => {
  const rt = await setupRuntime(t, { webhookTimeoutMs: 30_000 })
  // No pass but those the test wakes: one between would claim apart for the full host, find nothing
  // due and rest it (APART_REST_MS).
  const scheduler = hostLimitedScheduler(t, rt, { perHostConcurrency: 4, concurrency: 4, pollIntervalMs: 60_000 }, 4)
  let open = 0
  let maxOpen = 0
  let release = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  t.teardown(() => release())
  const hang = async () => {
    open += 1
    maxOpen = Math.max(maxOpen, open)
    await held
    open -= 1
    return { status: 200, body: 'ok' }
  }
  rt.provider.always(hang)
  const full = await otherHost(t, rt, 'Full host', 2)
  full.always(hang)
  const host = hostKey(full.url)!
  const templateId = await rt.template([{ kind: 'webhook', name: 'Busy host' }])
  for (let i = 0; i < 6; i++) await rt.start(templateId)
  // Only the full host's first call is due at first: the rest fall due once it waits for a slot.
  const { rows: [first] } = await sql<{ id: string }>`
    select id from deliveries where target_host = ${host} order by next_attempt_at, id limit 1`.execute(rt.db)
  await sql`update deliveries set next_attempt_at = next_attempt_at + interval '1 hour' where id <> ${first!.id}`.execute(rt.db)
  const { rows: [second] } = await sql<{ tenantId: string; stepId: string }>`
    select tenant_id as "tenantId", step_id as "stepId" from deliveries where target_host = ${host} and id <> ${first!.id}`.execute(rt.db)
  // Another worker holds every slot of the full host.
  const pool = openPostgres(rt.databaseUrl, { poolMax: 1 })
  t.teardown(() => pool.close())
  const other = new HostSlots(() => pool.session({ timeouts: true }), 4, () => {})
  const taken = await Promise.all([0, 1, 2, 3].map(() => other.acquire(host, 0)))
  t.ok(taken.every(Boolean), 'the other worker holds the full host\'s slots')
  const { rows: [started] } = await sql<{ at: Date }>`select clock_timestamp() as at`.execute(rt.db)
  await scheduler.start()

  const log = () => `open: ${open}, most open: ${maxOpen}; calls at the full host: ${full.calls.length}, at the other: ${rt.provider.calls.length}`
  // The worker asked for a slot and found the host full: its call waits in the host's line, with no place.
  await untilWaitingForSlot(rt, started!.at, log)
  // The claim apart for the full host (its line has places) stops at the second call's step, locked here.
  let unlock = () => {}
  const unlocked = new Promise<void>((resolve) => { unlock = resolve })
  let locked = () => {}
  const lockTaken = new Promise<void>((resolve) => { locked = resolve })
  const lockHeld = rt.db.transaction().execute(async (trx) => {
    await sql`select from instance_steps where tenant_id = ${second!.tenantId} and id = ${second!.stepId} for update`.execute(trx)
    locked()
    await unlocked
  })
  t.teardown(() => unlock())
  await lockTaken
  await sql`update deliveries set next_attempt_at = next_attempt_at - interval '1 hour' where id <> ${first!.id}`.execute(rt.db)
  scheduler.wake()
  await until('the claim apart waiting for the locked step', async () => {
    const { rows: [row] } = await sql<{ n: number }>`
      select count(*)::int as n from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock' and query like '%picked%'`.execute(rt.db)
    return row!.n > 0
  }, log, 5_000)
  // Meanwhile the other worker's slots come free: the waiting call has one and takes a place.
  for (const slot of taken) other.release(slot!)
  await other.close()
  await until('the first call at the full host', async () => full.calls.length === 1, log, 5_000)
  unlock()
  await lockHeld
  await until('the claims done', async () => (await deliveriesIn('running', rt)) >= 4, log, 5_000)
  const running = await deliveriesIn('running', rt)
  await until('every claimed call open', async () => open === running, log, 5_000)
  t.equal(maxOpen, 4, 'no more calls open at once than SCHEDULER_CONCURRENCY')
  t.equal(running, 4, 'and no more claimed')
})

t.test('a delivery claimed again while its first call hangs past its lease gives both its places back once both calls end', async (t) => {
  const { rt, scheduler, answers, log, templateId } = await claimedTwice(t)
  t.teardown(() => scheduler.stop(1000))
  for (const answer of answers.splice(0)) answer()
  await until('the delivery done', async () => (await deliveriesIn('succeeded', rt)) === 1, log, 5_000)
  // Both places are free again: two new calls are open at once.
  await rt.start(templateId)
  await rt.start(templateId)
  scheduler.wake()
  await until('both new calls open', async () => answers.length === 2, log, 5_000)
  t.equal(rt.provider.calls.length, 4, 'two calls of the first delivery, one of each new one')
})

t.test('stop() cuts off both calls of a delivery claimed again while its first call hangs, not only the newer one', async (t) => {
  const { rt, scheduler, log } = await claimedTwice(t)
  // Both calls hang until their 30 s timeout: the stop's grace ends them both, the older one too.
  let stopped = false
  const stopping = scheduler.stop(200).then(() => { stopped = true })
  await until('the stop', async () => stopped, log, 10_000)
  await stopping
  const { rows } = await sql<{ error: string | null }>`select error from delivery_attempts order by started_at`.execute(rt.db)
  t.equal(rows.length, 2, 'each call is logged')
  t.notOk(rows.some((row) => /within 30000 ms/.test(row.error ?? '')), 'neither ran into its timeout')
})

/**
 * A worker of two places whose one delivery's call hangs (30 s timeout) past its lease: the reaper
 * puts the delivery back and the same worker claims it again, so two calls of it are open.
 */
async function claimedTwice(t: Test) {
  const rt = await setupRuntime(t, { webhookTimeoutMs: 30_000 })
  const scheduler = rt.newScheduler({ concurrency: 2 })
  const { answers, held } = heldAnswers(t)
  rt.provider.always(async () => {
    await held()
    return { status: 200, body: 'ok' }
  })
  const templateId = await rt.template([{ kind: 'webhook', name: 'Hangs' }])
  await rt.start(templateId)
  await scheduler.start()
  const log = () => `calls: ${rt.provider.calls.length}, unanswered: ${answers.length}`
  await until('the first call', async () => answers.length === 1, log, 5_000)
  rt.clock.advance(61_000)
  scheduler.wake()
  await until('the second call of the same delivery', async () => answers.length === 2, log, 5_000)
  return { rt, scheduler, answers, log, templateId }
}

/** A host of its own (a step's free target on another provider), with `deliveries` calls queued for it. */
async function otherHost(t: Test, rt: RuntimeContext, name: string, deliveries: number): Promise<TestProvider> {
  const provider = await TestProvider.start(`whsec_${randomBytes(32).toString('base64')}`)
  t.teardown(() => provider.close())
  const templateId = await rt.template([{ kind: 'webhook', name, target: { url: `${provider.url}/hook`, secret: provider.secret, delivery: 'query' } }])
  for (let i = 0; i < deliveries; i++) await rt.start(templateId)
  return provider
}

async function deliveriesIn(status: string, rt: RuntimeContext): Promise<number> {
  const { rows: [row] } = await sql<{ n: number }>`select count(*)::int as n from deliveries where status = ${status}`.execute(rt.db)
  return row!.n
}

async function until(what: string, check: () => Promise<boolean>, logs: () => string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${logs()}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}
