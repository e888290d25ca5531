import t from 'tap'
import { setupApp } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { addTaskStep, createTemplate } from './fixtures.js'

// The catalogue is set up through the API here, so the rules are checked the way a tenant meets them:
// a webhook step needs a service that is active (operator) and activated by this tenant.

t.test('a service the tenant deactivated cannot be used by webhook steps', async (t) => {
  const { operator, newTenant } = await setupApp(t)
  const { client } = await newTenant()
  const service = await operator.post('/v1/marketplace-services', { name: 'Valuation', provider: 'Acme', webhookUrl: 'https://provider.example/hook' })
  t.equal(service.statusCode, 201)
  const serviceId = service.data.id
  const parameter = await operator.post(`/v1/marketplace-services/${serviceId}/parameters`, { name: 'mode', type: 'string', required: true })
  t.equal(parameter.statusCode, 201, parameter.body)
  const activation = `/v1/marketplace-services/${serviceId}/activation`
  t.equal((await client.put(activation)).statusCode, 200)

  const template = await createTemplate(client)
  const steps = `/v1/process-templates/${template}/steps`
  const hook = { kind: 'webhook', name: 'Value it', serviceId, parameters: { mode: 'full' } }
  const created = await client.post(steps, hook)
  t.equal(created.statusCode, 201, 'usable while activated')
  assertProblem(t, await client.delete(activation), 409, /remove those steps first/)
  t.equal((await client.delete(`${steps}/${created.data.id}`)).statusCode, 204)
  t.equal((await client.delete(activation)).statusCode, 204, 'deactivated once no step uses it')

  const notActivated = /\/body\/serviceId.*not activated for this tenant/
  assertProblem(t, await client.post(steps, hook), 422, notActivated)
  const taskId = await addTaskStep(client, template, 'Call the owner')
  assertProblem(t, await client.patch(`${steps}/${taskId}`, hook), 422, notActivated)
  t.match((await client.get(`${steps}/${taskId}`)).data, { kind: 'task', serviceId: null, version: 1 }, 'the refused update changed nothing')

  t.equal((await client.put(activation)).statusCode, 200)
  const updated = await client.patch(`${steps}/${taskId}`, hook)
  t.equal(updated.statusCode, 200, 'usable again once reactivated')
  t.match(updated.data, { kind: 'webhook', serviceId })
})

t.test('a service the operator deactivated cannot be used by webhook steps, even when the tenant activated it', async (t) => {
  const { operator, newTenant } = await setupApp(t)
  const { client } = await newTenant()
  const service = await operator.post('/v1/marketplace-services', { name: 'Valuation', provider: 'Acme', webhookUrl: 'https://provider.example/hook' })
  const serviceId = service.data.id
  t.equal((await client.put(`/v1/marketplace-services/${serviceId}/activation`)).statusCode, 200)

  const template = await createTemplate(client)
  const steps = `/v1/process-templates/${template}/steps`
  const hook = { kind: 'webhook', name: 'Value it', serviceId }
  const created = await client.post(steps, hook)
  t.equal(created.statusCode, 201)

  t.equal((await operator.patch(`/v1/marketplace-services/${serviceId}`, { active: false })).statusCode, 200)
  const notActive = /\/body\/serviceId.*not an active marketplace service/
  assertProblem(t, await client.post(steps, hook), 422, notActive)
  assertProblem(t, await client.patch(`${steps}/${created.data.id}`, { name: 'Value it again' }), 422, notActive)
  const taskId = await addTaskStep(client, template, 'Call the owner')
  assertProblem(t, await client.patch(`${steps}/${taskId}`, hook), 422, notActive)
})
