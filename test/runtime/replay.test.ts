import t from 'tap'
import { setupRuntime } from '../helpers/runtime.js'

t.test('a finished delivery replays as a new round with the same deliveryId', async (t) => {
  const rt = await setupRuntime(t)
  const templateId = await rt.template([{ kind: 'webhook', name: 'Sync the list', refersTo: { property: true } }])
  const started = await rt.start(templateId)
  const deliveryId = started.steps[0].delivery.id

  const early = await rt.api.post(`/v1/deliveries/${deliveryId}/replay`)
  t.equal(early.statusCode, 409, 'a pending delivery cannot be replayed')

  await rt.scheduler.runOnce()
  t.equal((await rt.instance(started.id)).status, 'completed')
  const replayed = await rt.api.post(`/v1/deliveries/${deliveryId}/replay`)
  t.equal(replayed.statusCode, 202, replayed.body)
  t.match(replayed.data, { id: deliveryId, status: 'pending', round: 2, attemptCount: 0 })

  await rt.scheduler.runOnce()
  const [first, second] = rt.provider.calls
  t.equal(rt.provider.calls.length, 2)
  t.equal(second!.query.deliveryId, deliveryId)
  t.equal(second!.headers['idempotency-key'], first!.headers['idempotency-key'])
  t.ok(second!.signatureValid)
  const delivery = (await rt.api.get(`/v1/deliveries/${deliveryId}`)).data
  t.equal(delivery.status, 'succeeded')
  t.same(delivery.attempts.map((a: { round: number; outcome: string }) => [a.round, a.outcome]), [[1, 'succeeded'], [2, 'succeeded']])
  const after = await rt.instance(started.id)
  t.equal(after.status, 'completed', 'the process is not touched')
  t.equal(after.steps[0].state, 'done')

  const other = await rt.newTenant()
  t.equal((await other.client.post(`/v1/deliveries/${deliveryId}/replay`)).statusCode, 404, 'invisible to other tenants')

  // A service no longer active for the tenant is not called: the replay says so at once, as a recovery does.
  t.equal((await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { active: false })).statusCode, 200)
  const refused = await rt.api.post(`/v1/deliveries/${deliveryId}/replay`)
  t.equal(refused.statusCode, 409, refused.body)
  t.match(refused.data.detail, /is not active for this tenant/)
  t.equal((await rt.api.get(`/v1/deliveries/${deliveryId}`)).data.round, 2, 'no new round')
})

t.test('a failed step is retried through its process, not replayed', async (t) => {
  const rt = await setupRuntime(t)
  rt.provider.always({ status: 404 })
  const templateId = await rt.template([{ kind: 'webhook', name: 'Sync the list', refersTo: { property: true } }])
  const started = await rt.start(templateId)
  await rt.scheduler.runOnce()
  const response = await rt.api.post(`/v1/deliveries/${started.steps[0].delivery.id}/replay`)
  t.equal(response.statusCode, 409)
  t.match(response.data.detail, /retry it with POST \/v1\/process-instances\/.*\/retry/)
})

t.test('a failed step of a service no longer active for the tenant is not retried: 409, as its replay answers', async (t) => {
  const rt = await setupRuntime(t)
  rt.provider.always({ status: 404 })
  const templateId = await rt.template([{ kind: 'webhook', name: 'Value it', refersTo: { property: true } }])
  const started = await rt.start(templateId)
  await rt.scheduler.runOnce()
  const stepId = started.steps[0].id
  t.equal((await rt.instance(started.id)).steps[0].state, 'failed')

  t.equal((await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { active: false })).statusCode, 200)
  const refused = await rt.api.post(`/v1/process-instances/${started.id}/steps/${stepId}/retry`)
  t.equal(refused.statusCode, 409, refused.body)
  t.match(refused.data.detail, /is not active for this tenant/)
  const after = await rt.instance(started.id)
  t.equal(after.steps[0].state, 'failed', 'the step stays failed, for a person to resolve')
  t.match(after.steps[0].delivery, { status: 'failed', round: 1 }, 'no new round')

  t.equal((await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { active: true })).statusCode, 200)
  const retried = await rt.api.post(`/v1/process-instances/${started.id}/steps/${stepId}/retry`)
  t.equal(retried.statusCode, 200, retried.body)
  t.match(retried.data.steps[0].delivery, { status: 'pending', round: 2 })
})
