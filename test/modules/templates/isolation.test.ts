import t from 'tap'
import { setupApp } from '../../helpers/app.js'
import { assertIsolated, assertProblem } from '../../helpers/assertions.js'
import { activate, addTaskStep, createTemplate, createUser, valuationService } from './fixtures.js'

// One app and database for the file: each test works in tenants of its own.
const ctx = await setupApp(t)

t.test('templates and steps are invisible to other tenants', async (t) => {
  const a = await ctx.newTenant()
  const b = await ctx.newTenant()
  const template = await createTemplate(a.client, { name: 'A template' })
  const stepId = await addTaskStep(a.client, template, 'A step')
  const steps = `/v1/process-templates/${template}/steps`

  await assertIsolated(t, b.client, { collection: '/v1/process-templates', id: template, update: { name: 'Mallory' } })
  await assertIsolated(t, b.client, { collection: steps, id: stepId, update: { name: 'Mallory' } })
  assertProblem(t, await b.client.post(`/v1/process-templates/${template}/copy`, {}), 404)
  assertProblem(t, await b.client.put(`${steps}/order`, { stepIds: [stepId] }), 404)
  assertProblem(t, await b.client.post(steps, { kind: 'task', name: 'Intruder' }), 404)

  const mine = await createTemplate(b.client)
  assertProblem(t, await b.client.get(`/v1/process-templates/${mine}/steps/${stepId}`), 404, /Step/)
  assertProblem(t, await b.client.patch(`/v1/process-templates/${mine}/steps/${stepId}`, { name: 'x' }), 404)

  const own = await a.client.get(`/v1/process-templates/${template}`)
  t.match(own.data, { name: 'A template', version: 2 }, 'unchanged for its owner')
  t.same(own.data.steps.map((s: { name: string }) => s.name), ['A step'])
})

t.test('a tenant cannot use another tenant\'s users or activations', async (t) => {
  const a = await ctx.newTenant()
  const b = await ctx.newTenant()
  const annaOfA = await createUser(a.client)
  const serviceOfA = await valuationService(ctx.db, a.id)
  const template = await createTemplate(b.client)
  const steps = `/v1/process-templates/${template}/steps`

  assertProblem(t, await b.client.post('/v1/process-templates', { name: 'x', controllerUserId: annaOfA }), 422, /\/body\/controllerUserId/)
  assertProblem(t, await b.client.patch(`/v1/process-templates/${template}`, { controllerUserId: annaOfA }), 422, /\/body\/controllerUserId/)
  assertProblem(t, await b.client.post(steps, { kind: 'task', name: 'x', responsibility: { user: annaOfA } }), 422, /\/body\/responsibility\/user/)
  const hook = { kind: 'webhook', name: 'x', serviceId: serviceOfA, parameters: { mode: 'full' } }
  assertProblem(t, await b.client.post(steps, hook), 422, /not activated for this tenant/)
  await activate(ctx.db, b.id, serviceOfA)
  t.equal((await b.client.post(steps, hook)).statusCode, 201, 'once B activates the service it may use it')
})
