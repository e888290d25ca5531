// A write whose COMMIT went through while its answer was lost with the connection: the client (or the
// worker) cannot know it committed. Retried, nothing is made twice. The app and the scheduler reach the
// test's database through a fault-injecting TCP proxy that drops the commit's answer.
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { systemClock } from '../../src/adapters/clock.js'
import { appBehindFaultProxy } from '../helpers/faulty-app.js'
import { setupRuntime } from '../helpers/runtime.js'

const rt = await setupRuntime(t)
const { proxy, db: faultyDb, api } = await appBehindFaultProxy(t, rt, {
  poolMax: 4, statementTimeoutMs: 1000, env: { RATE_LIMIT_MAX: '0', WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true' }
})
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

t.test('a start with an Idempotency-Key whose commit answer was lost: 503, and the retry answers the first process', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Call the owner' }])
  const key = { 'idempotency-key': `start-${randomUUID()}` }
  const body = { templateId, responsibleUserId: rt.worker.id, propertyId: rt.propertyId }
  const fault = proxy.cutAfterNextCommit(300, /insert into process_instances/, { loseAnswer: true })
  const first = await api.post('/v1/process-instances', body, key)
  await fault
  t.equal(first.statusCode, 503, first.body)
  const retry = await api.post('/v1/process-instances', body, key)
  t.equal(retry.statusCode, 200, retry.body)
  const all = await rt.db.selectFrom('process_instances').select('id').where('template_id', '=', templateId).execute()
  t.equal(all.length, 1, 'one process')
  t.equal(retry.data.id, all[0]!.id)
})

t.test('a create with triggers whose commit answer was lost: the retry fires nothing again', async (t) => {
  await rt.operator.post(`/v1/marketplace-services/${rt.serviceId}/triggers`, { module: 'address', events: ['create', 'update'], fields: [] })
  const key = { 'idempotency-key': `create-${randomUUID()}` }
  const body = { fields: { city: `Kiel-${randomUUID()}` } }
  const fault = proxy.cutAfterNextCommit(300, /insert into "?addresses/, { loseAnswer: true })
  const first = await api.post('/v1/addresses', body, key)
  await fault
  t.equal(first.statusCode, 503, first.body)
  const retry = await api.post('/v1/addresses', body, key)
  t.equal(retry.statusCode, 200, retry.body)
  const deliveries = await rt.db.selectFrom('deliveries').select('id').where('address_id', '=', retry.data.id).execute()
  t.equal(deliveries.length, 1, 'one delivery')

  // An update with triggers whose commit answer is lost, retried with the same change.
  const fault2 = proxy.cutAfterNextCommit(300, /update "?addresses/, { loseAnswer: true })
  const patch = await api.patch(`/v1/addresses/${retry.data.id}`, { fields: { phone: '0431' } })
  await fault2
  t.equal(patch.statusCode, 503, patch.body)
  const again = await api.patch(`/v1/addresses/${retry.data.id}`, { fields: { phone: '0431' } })
  t.equal(again.statusCode, 200, again.body)
  const after = await rt.db.selectFrom('deliveries').select('id').where('address_id', '=', retry.data.id).execute()
  t.equal(after.length, 2, 'the update fired once')
})

t.test('an advance whose commit answer was lost: the retry with its stepId moves nothing more', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'One' }, { kind: 'task', name: 'Two' }, { kind: 'task', name: 'Three' }])
  const started = await rt.start(templateId)
  const stepId = started.steps[0].id
  const fault = proxy.cutAfterNextCommit(300, /update process_instances/, { loseAnswer: true })
  const first = await api.post(`/v1/process-instances/${started.id}/advance`, { outcome: 'done', stepId })
  await fault
  t.equal(first.statusCode, 503, first.body)
  const retry = await api.post(`/v1/process-instances/${started.id}/advance`, { outcome: 'done', stepId })
  t.equal(retry.statusCode, 409, retry.body)
  const now = await rt.instance(started.id)
  t.same(now.steps.map((s: { state: string }) => s.state), ['done', 'due', 'pending'])
})

t.test('an outcome batch whose commit answer was lost: one attempt, one call, the next step started once', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Ask ValueCo' }, { kind: 'webhook', name: 'Ask again' }])
  rt.clock.set(new Date())
  rt.provider.always({ status: 200, body: 'ok' })
  const started = await rt.start(templateId)
  const scheduler = rt.newScheduler({ pollIntervalMs: 100 }, undefined, { db: faultyDb, clock: systemClock })
  const fault = proxy.cutAfterNextCommit(300, /insert into delivery_attempts/, { loseAnswer: true })
  await scheduler.start()
  t.teardown(() => scheduler.stop(1000))
  await fault
  const began = Date.now()
  while ((await rt.instance(started.id)).status !== 'completed' && Date.now() - began < 10_000) await sleep(100)
  const done = await rt.instance(started.id)
  t.equal(done.status, 'completed')
  t.equal(rt.provider.calls.filter((c) => c.query.processId === started.id).length, 2, 'each step called once')
  const attempts = await rt.db.selectFrom('delivery_attempts').innerJoin('deliveries', 'deliveries.id', 'delivery_attempts.delivery_id')
    .select(['delivery_attempts.outcome']).where('deliveries.instance_id', '=', started.id).execute()
  t.same(attempts.map((a) => a.outcome), ['succeeded', 'succeeded'])
  const deliveries = await rt.db.selectFrom('deliveries').select('id').where('instance_id', '=', started.id).execute()
  t.equal(deliveries.length, 2)
})
