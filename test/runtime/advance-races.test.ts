// A due webhook step skipped while a worker claims its call and puts it back uncounted (a host turned
// it away, a stop). The advance cancels the unclaimed delivery, then reads the step again: a claim
// committed before the cancel, and its release committed before the read, left the delivery pending
// and the step due, so the step was skipped with its call still queued, and a worker then called the
// provider for a step that had ended (for a process that may have ended with it).
import pg from 'pg'
import type { Test } from 'tap'
import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { claimStatement } from '../../src/scheduler/claim-deliveries.js'
import { releaseDelivery } from '../../src/scheduler/delivery-repository.js'
import { reapExpiredLeases } from '../../src/scheduler/reap-expired-leases.js'
import { holdRow } from '../helpers/database.js'
import { gateDeliveries, lockWaiters } from '../helpers/deliveries-gate.js'
import { setupRuntime } from '../helpers/runtime.js'

const rt = await setupRuntime(t)
rt.provider.always({ status: 200, body: 'ok' })
// While shut, each statement that updates deliveries waits once it has run: the advance is held between its
// cancel of the unclaimed deliveries and its next statement.
const gate = await gateDeliveries(t, rt.db, rt.databaseUrl, 'after')
const locker = new pg.Client({ connectionString: rt.databaseUrl })
await locker.connect()
t.teardown(() => locker.end())

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const waiters = (event?: string) => lockWaiters(rt.db, event)

/**
 * Skips the process's due webhook step while a worker claims its call and `goBack` puts it back: the
 * claim commits after the advance has read the step and before its cancel of the unclaimed deliveries,
 * and `goBack` runs while the advance is held after that cancel (or waits for a lock the advance holds).
 */
async function skipWhile(instanceId: string, stepId: string, goBack: () => Promise<unknown>) {
  // A worker's claim, not yet committed: the advance reads the step as due.
  const claim = await holdRow(rt.db, claimStatement({ workerId: 'worker-a', now: rt.clock.now(), leaseMs: 60_000, limit: 10 }))
  // A lock on the table that waits for the claim, and that the advance's next write to the deliveries
  // queues behind: that write runs once the claim has committed, as it would a round trip later.
  await locker.query('begin')
  const tableLocked = locker.query('lock table deliveries in share mode')
  while (await waiters() < 1) await sleep(5)
  let answered = false
  const advance = rt.api.post(`/v1/process-instances/${instanceId}/advance`, { outcome: 'skipped', stepId }).finally(() => { answered = true })
  while (!answered && await waiters() < 2) await sleep(5)
  await claim.release()
  await tableLocked
  await gate.shut()
  await locker.query('commit')
  // The advance's write to the deliveries has run, and it waits at the gate.
  while (!answered && await waiters('advisory') < 1) await sleep(5)
  return gate.letThrough(advance, goBack)
}

async function checkNoCallAfterSkip(t: Test, instanceId: string, deliveryId: string, answer: { statusCode: number; body: string }) {
  t.ok([200, 409].includes(answer.statusCode), `the advance answers 200 or 409: ${answer.statusCode} ${answer.body}`)
  const instance = await rt.instance(instanceId)
  const { rows } = await sql<{ status: string }>`select status from deliveries where id = ${deliveryId}`.execute(rt.db)
  if (answer.statusCode === 200) {
    t.equal(instance.steps[0].state, 'skipped')
    t.same(rows.map((r) => r.status), ['cancelled'], 'the call that went back is cancelled with its skipped step')
  } else {
    t.equal(instance.currentStep.position, 1, 'the process waits at the step')
  }
  const before = rt.provider.calls.filter((c) => c.query.deliveryId === deliveryId).length
  await rt.newScheduler().runOnce()
  const after = rt.provider.calls.filter((c) => c.query.deliveryId === deliveryId).length
  t.equal(after - before, answer.statusCode === 200 ? 0 : 1, answer.statusCode === 200 ? 'no call for a skipped step' : 'the call is made once')
}

async function startOne() {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Ask ValueCo' }, { kind: 'task', name: 'Read it' }])
  const started = await rt.start(templateId)
  return { instanceId: started.id as string, stepId: started.steps[0].id as string, deliveryId: started.steps[0].delivery.id as string }
}

async function fenceOf(deliveryId: string): Promise<number> {
  const { rows: [row] } = await sql<{ fence: number }>`select fence from deliveries where id = ${deliveryId}`.execute(rt.db)
  return row!.fence
}

t.test('a skip while a worker claims the call and releases it uncounted: the step is skipped with its call, or the advance answers 409', async (t) => {
  const { instanceId, stepId, deliveryId } = await startOne()
  const answer = await skipWhile(instanceId, stepId, async () =>
    releaseDelivery(rt.db, { tenantId: rt.tenant.id, id: deliveryId, stepId, fence: await fenceOf(deliveryId) }))
  await checkNoCallAfterSkip(t, instanceId, deliveryId, answer)
})

t.test('a skip while a worker claims the call and the reaper takes it back: the step is skipped with its call, or the advance answers 409', async (t) => {
  const { instanceId, stepId, deliveryId } = await startOne()
  const answer = await skipWhile(instanceId, stepId, () => {
    rt.clock.advance(61_000)
    return reapExpiredLeases(rt.db, rt.clock.now())
  })
  await checkNoCallAfterSkip(t, instanceId, deliveryId, answer)
})
