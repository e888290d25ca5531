// A process cancelled while its step's claim goes back to the queue: a worker releasing its call
// uncounted (no host slot in time, a stop), or the reaper taking back an expired lease. The claim goes
// back without the process's lock, so the cancel must not read the step as due (and cancel the
// process) while the delivery it had found running is left pending: a worker would then call the
// provider for a process that was cancelled.
import type { Test } from 'tap'
import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { claimDeliveries, type ClaimedDelivery } from '../../src/scheduler/claim-deliveries.js'
import { releaseDelivery } from '../../src/scheduler/delivery-repository.js'
import { reapExpiredLeases } from '../../src/scheduler/reap-expired-leases.js'
import { holdRow } from '../helpers/database.js'
import { gateDeliveries, lockWaiters } from '../helpers/deliveries-gate.js'
import { setupRuntime } from '../helpers/runtime.js'

const rt = await setupRuntime(t)
rt.provider.always({ status: 200, body: 'ok' })
// While shut, each statement that updates deliveries waits: the cancel is held at its first write to the
// deliveries, as a slow round trip would hold it.
const gate = await gateDeliveries(t, rt.db, rt.databaseUrl, 'before')

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const waiters = () => lockWaiters(rt.db)

/**
 * Cancels the process while `goBack` puts its claimed call back: the cancel is held at its first write
 * to the deliveries until `goBack` has committed, or waits for a lock the cancel holds.
 */
async function cancelWhile(instanceId: string, goBack: () => Promise<unknown>) {
  await gate.shut()
  const cancel = rt.api.post(`/v1/process-instances/${instanceId}/cancel`, {})
  while (await waiters() < 1) await sleep(5)
  return gate.letThrough(cancel, goBack)
}

async function claimOf(deliveryId: string): Promise<ClaimedDelivery> {
  const claims = await claimDeliveries(rt.db, { workerId: 'worker-a', now: rt.clock.now(), leaseMs: 60_000, limit: 10 })
  const claim = claims.find((c) => c.id === deliveryId)
  if (!claim) throw new Error('the delivery was not claimed')
  return claim
}

async function checkNoCallAfterCancel(t: Test, instanceId: string, deliveryId: string, answer: { statusCode: number; body: string }) {
  t.ok([200, 409].includes(answer.statusCode), `the cancel answers 200 or 409: ${answer.statusCode}`)
  const instance = await rt.instance(instanceId)
  const { rows } = await sql<{ status: string }>`select status from deliveries where id = ${deliveryId}`.execute(rt.db)
  if (answer.statusCode === 200) {
    t.equal(instance.status, 'cancelled')
    t.same(rows.map((r) => r.status), ['cancelled'], 'the call that went back is cancelled with its process')
  } else {
    t.equal(instance.status, 'running', 'the process runs on')
  }
  const before = rt.provider.calls.filter((c) => c.query.deliveryId === deliveryId).length
  await rt.newScheduler().runOnce()
  const after = rt.provider.calls.filter((c) => c.query.deliveryId === deliveryId).length
  t.equal(after - before, answer.statusCode === 200 ? 0 : 1, answer.statusCode === 200 ? 'no call for a cancelled process' : 'the call is made once')
}

t.test('a cancel while a worker releases its claim uncounted: the process is cancelled with its call, or the cancel answers 409', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Ask ValueCo' }, { kind: 'task', name: 'Read it' }])
  const started = await rt.start(templateId)
  const deliveryId = started.steps[0].delivery.id as string
  const claim = await claimOf(deliveryId)
  const answer = await cancelWhile(started.id, () => releaseDelivery(rt.db, claim))
  await checkNoCallAfterCancel(t, started.id, deliveryId, answer)
})

t.test('a cancel while the reaper takes back an expired lease: the process is cancelled with its call, or the cancel answers 409', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Ask ValueCo' }, { kind: 'task', name: 'Read it' }])
  const started = await rt.start(templateId)
  const deliveryId = started.steps[0].delivery.id as string
  await claimOf(deliveryId)
  rt.clock.advance(61_000)
  const answer = await cancelWhile(started.id, () => reapExpiredLeases(rt.db, rt.clock.now()))
  await checkNoCallAfterCancel(t, started.id, deliveryId, answer)
})

t.test('a cancel that meets a claim going back, not yet committed: it waits for it, and cancels the process with its call', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Ask ValueCo' }, { kind: 'task', name: 'Read it' }])
  const started = await rt.start(templateId)
  const deliveryId = started.steps[0].delivery.id as string
  const claim = await claimOf(deliveryId)
  // The release's writes (releaseDelivery), in a transaction held open.
  const release = await holdRow(rt.db, sql`
    with back as (
      update deliveries set status = 'pending', lease_owner = null, lease_expires_at = null, attempt_count = attempt_count - 1
      where tenant_id = ${claim.tenantId} and id = ${claim.id} and fence = ${claim.fence} and status = 'running'
      returning tenant_id, step_id
    )
    update instance_steps s set state = 'due' from back where s.tenant_id = back.tenant_id and s.id = back.step_id and s.state = 'running'
  `)
  let answered = false
  const cancel = rt.api.post(`/v1/process-instances/${started.id}/cancel`, {}).finally(() => { answered = true })
  while (!answered && await waiters() < 1) await sleep(5)
  await release.release()
  const answer = await cancel
  t.equal(answer.statusCode, 200, answer.body)
  await checkNoCallAfterCancel(t, started.id, deliveryId, answer)
})
