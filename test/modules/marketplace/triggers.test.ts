import t from 'tap'
import { setupApp } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { createService } from './fixtures/catalogue.js'

// One app and database for the file: each test works in tenants of its own.
const ctx = await setupApp(t)

const UNKNOWN = '00000000-0000-4000-8000-000000000000'

t.test('triggers: create, read, list, update, delete', async (t) => {
  const { operator } = ctx
  const service = await createService(operator)
  const base = `/v1/marketplace-services/${service.id}/triggers`

  const created = await operator.post(base, { module: 'property', events: ['create', 'update'], fields: ['price', 'livingArea'] })
  t.equal(created.statusCode, 201)
  t.same(created.data, { id: created.data.id, serviceId: service.id, module: 'property', events: ['create', 'update'], fields: ['price', 'livingArea'] })
  const any = await operator.post(base, { module: 'address', events: ['update'] })
  t.same(any.data.fields, [], 'no fields = any change')

  t.same((await operator.get(base)).data.items.map((x: { module: string }) => x.module), ['property', 'address'])
  t.equal((await operator.get(`${base}?limit=1`)).data.items.length, 1)
  t.same((await operator.get(`${base}/${created.data.id}`)).data.fields, ['price', 'livingArea'])

  const updated = await operator.patch(`${base}/${created.data.id}`, { events: ['update'], fields: [] })
  t.match(updated.data, { module: 'property', events: ['update'], fields: [] })

  t.equal((await operator.delete(`${base}/${any.data.id}`)).statusCode, 204)
  assertProblem(t, await operator.get(`${base}/${any.data.id}`), 404)
  assertProblem(t, await operator.delete(`${base}/${any.data.id}`), 404)
  assertProblem(t, await operator.patch(`${base}/${any.data.id}`, { events: ['create'] }), 404)
  assertProblem(t, await operator.post(`/v1/marketplace-services/${UNKNOWN}/triggers`, { module: 'property', events: ['create'] }), 404)
})

t.test('trigger schema failures answer 400', async (t) => {
  const { operator } = ctx
  const service = await createService(operator)
  const base = `/v1/marketplace-services/${service.id}/triggers`
  assertProblem(t, await operator.post(base, { module: 'property', events: [] }), 400, /\/body\/events/)
  assertProblem(t, await operator.post(base, { module: 'property', events: ['create', 'create'] }), 400, /\/body\/events/)
  assertProblem(t, await operator.post(base, { module: 'property', events: ['delete'] }), 400, /\/body\/events/)
  assertProblem(t, await operator.post(base, { module: 'activity', events: ['create'] }), 400, /\/body\/module/)
  assertProblem(t, await operator.post(base, { module: 'property', events: ['create'], fields: ['price', 'price'] }), 400, /\/body\/fields/)
  assertProblem(t, await operator.post(base, { module: 'property', events: ['create'], fields: [''] }), 400, /\/body\/fields/)
  assertProblem(t, await operator.post(base, { events: ['create'] }), 400, /module/)
  const created = await operator.post(base, { module: 'property', events: ['create'] })
  assertProblem(t, await operator.patch(`${base}/${created.data.id}`, {}), 400)
  assertProblem(t, await operator.get(`${base}/not-a-uuid`), 400)
})

t.test('tenants read triggers of services they can see, and write none', async (t) => {
  const { operator, newTenant } = ctx
  const { client } = await newTenant()
  const service = await createService(operator)
  const hidden = await createService(operator, { active: false })
  const base = `/v1/marketplace-services/${service.id}/triggers`
  const trigger = await operator.post(base, { module: 'property', events: ['update'], fields: ['price'] })
  const hiddenTrigger = await operator.post(`/v1/marketplace-services/${hidden.id}/triggers`, { module: 'property', events: ['update'] })

  t.equal((await client.get(base)).data.items.length, 1)
  t.equal((await client.get(`${base}/${trigger.data.id}`)).data.module, 'property')
  assertProblem(t, await client.get(`/v1/marketplace-services/${hidden.id}/triggers`), 404)
  assertProblem(t, await client.get(`/v1/marketplace-services/${hidden.id}/triggers/${hiddenTrigger.data.id}`), 404)
  assertProblem(t, await client.post(base, { module: 'address', events: ['create'] }), 403)
  assertProblem(t, await client.patch(`${base}/${trigger.data.id}`, { events: ['create'] }), 403)
  assertProblem(t, await client.delete(`${base}/${trigger.data.id}`), 403)
})

t.test('a trigger watches only fields a record can hold: a comma or __proto__ answers 422 with a pointer', async (t) => {
  const { operator } = ctx
  const service = await createService(operator)
  const base = `/v1/marketplace-services/${service.id}/triggers`
  // A record refuses such names (422 for a comma, 400 for __proto__), so a trigger watching them would never fire.
  assertProblem(t, await operator.post(base, { module: 'property', events: ['update'], fields: ['price', 'price,livingArea'] }), 422, /\/body\/fields\/1/)
  assertProblem(t, await operator.post(base, { module: 'property', events: ['update'], fields: ['__proto__'] }), 422, /\/body\/fields\/0/)
  const created = await operator.post(base, { module: 'property', events: ['update'], fields: ['price'] })
  t.equal(created.statusCode, 201, created.body)
  assertProblem(t, await operator.patch(`${base}/${created.data.id}`, { fields: ['a,b'] }), 422, /\/body\/fields\/0/)
  t.same((await operator.get(`${base}/${created.data.id}`)).data.fields, ['price'], 'the refused change changed nothing')
  t.equal((await operator.patch(`${base}/${created.data.id}`, { events: ['create'] })).statusCode, 200, 'a change naming no fields is not checked again')
  assertProblem(t, await operator.post(`/v1/marketplace-services/${UNKNOWN}/triggers`, { module: 'property', events: ['create'], fields: ['a,b'] }), 404)
})
