// The order in which due work is taken, as the README's scheduler section gives it: oldest first,
// whatever its tenant, with no share kept for each.
import { sql } from '../../src/db/kysely.js'
import t from 'tap'
import { setupRuntime } from '../helpers/runtime.js'

const rt = await setupRuntime(t)

t.test('calls are made in the order they fell due, whatever their tenant: a retry whose wait ended before goes ahead of a fresh step', async (t) => {
  // Tenant B, with the same service.
  const b = await rt.newTenant()
  const activated = await b.client.put(`/v1/marketplace-services/${rt.serviceId}/activation`)
  t.equal(activated.statusCode, 200, activated.body)
  const user = (await b.client.post('/v1/users', { name: 'Bea', email: 'bea@b.example' })).data
  const template = (await b.client.post('/v1/process-templates', { name: 'B calls', controllerUserId: user.id })).data
  await b.client.post(`/v1/process-templates/${template.id}/steps`, { kind: 'webhook', name: 'Ask', serviceId: rt.serviceId, responsibility: 'processResponsible' })
  const version = (await b.client.get(`/v1/process-templates/${template.id}`)).data.version
  t.equal((await b.client.patch(`/v1/process-templates/${template.id}`, { active: true }, { 'if-match': `"${version}"` })).statusCode, 200)

  // Tenant A: five calls due now; one fails once and is retried after its wait (10 s).
  const aTemplate = await rt.template([{ kind: 'webhook', name: 'Ask' }])
  rt.provider.queue({ status: 503 })
  const retried = await rt.start(aTemplate)
  await rt.newScheduler({ concurrency: 1, batchSize: 1 }).runOnce()
  t.equal(rt.provider.calls.length, 1, 'the first call failed and waits 10 s')
  const a: string[] = []
  for (let i = 0; i < 4; i++) a.push((await rt.start(aTemplate)).id)
  rt.clock.advance(12_000)
  const fresh = (await b.client.post('/v1/process-instances', { templateId: template.id, responsibleUserId: user.id })).data
  t.ok(fresh.id, 'tenant B\'s call is due 12 s after A\'s four, 2 s after A\'s retry')

  // One at a time: the order of the calls is the order of the claims.
  await rt.newScheduler({ concurrency: 1, batchSize: 1 }).runOnce()
  const order = rt.provider.calls.slice(1).map((call) => call.query.deliveryId)
  const { rows } = await sql<{ id: string; instance_id: string }>`select id, instance_id from deliveries`.execute(rt.db)
  const instanceOf = new Map(rows.map((row) => [row.id, row.instance_id]))
  const calledInstances = order.map((id) => instanceOf.get(id!))
  t.same(calledInstances.slice(0, 4).sort(), [...a].sort(), 'A\'s four, due first, went first')
  t.same(calledInstances.slice(4), [retried.id, fresh.id], 'then A\'s retry, then B\'s fresh call, made after all that fell due before it')
})
