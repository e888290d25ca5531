import { randomUUID } from 'node:crypto'
import t from 'tap'
import { setupApp } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { createService } from './fixtures/catalogue.js'

// One app and database for the file: each test works in tenants of its own.
const ctx = await setupApp(t)

// A tenant sees the active services and those it activated. Any other service (the operator
// deactivated it, and this tenant never activated it) answers on every route exactly as an id that
// does not exist: nothing tells the tenant it is there.
t.test('a service the tenant cannot see answers as an unknown id on every route', async (t) => {
  const { operator, newTenant } = ctx
  const { client } = await newTenant()
  const hidden = await createService(operator, { active: false })
  const since = { since: new Date().toISOString() }
  const routes: [string, (id: string) => Promise<Awaited<ReturnType<typeof client.get>>>][] = [
    ['GET', (id) => client.get(`/v1/marketplace-services/${id}`)],
    ['GET parameters', (id) => client.get(`/v1/marketplace-services/${id}/parameters`)],
    ['GET a parameter', (id) => client.get(`/v1/marketplace-services/${id}/parameters/${randomUUID()}`)],
    ['GET triggers', (id) => client.get(`/v1/marketplace-services/${id}/triggers`)],
    ['GET a trigger', (id) => client.get(`/v1/marketplace-services/${id}/triggers/${randomUUID()}`)],
    ['PUT activation', (id) => client.put(`/v1/marketplace-services/${id}/activation`)],
    ['GET activation', (id) => client.get(`/v1/marketplace-services/${id}/activation`)],
    ['DELETE activation', (id) => client.delete(`/v1/marketplace-services/${id}/activation`)],
    ['POST recover', (id) => client.post(`/v1/marketplace-services/${id}/recover`, since)],
    ['POST recover (dry run)', (id) => client.post(`/v1/marketplace-services/${id}/recover`, { ...since, dryRun: true })]
  ]
  for (const [name, call] of routes) {
    const random = randomUUID()
    const unknown = await call(random)
    const seen = await call(hidden.id)
    assertProblem(t, seen, 404)
    t.equal(seen.statusCode, unknown.statusCode, `${name}: the same status as an unknown id`)
    t.equal(seen.data.detail.replace(hidden.id, '<id>'), unknown.data.detail.replace(random, '<id>'), `${name}: the same detail`)
    t.notMatch(seen.body, /Valuation|PriceHubble|not active/, `${name}: nothing about the service`)
  }
  const list = await client.get('/v1/marketplace-services?limit=200')
  t.notOk(list.data.items.some((s: { id: string }) => s.id === hidden.id), 'not listed')
  t.notOk((await client.get('/v1/marketplace-services?active=false')).data.items.some((s: { id: string }) => s.id === hidden.id))
})

t.test('a service the tenant activated stays in its view after the operator deactivates it', async (t) => {
  const { operator, newTenant } = ctx
  const { client } = await newTenant()
  const service = await createService(operator)
  await client.put(`/v1/marketplace-services/${service.id}/activation`)
  await operator.patch(`/v1/marketplace-services/${service.id}`, { active: false })
  t.equal((await client.get(`/v1/marketplace-services/${service.id}`)).statusCode, 200)
  assertProblem(t, await client.put(`/v1/marketplace-services/${service.id}/activation`), 422, /not active/)
  assertProblem(t, await client.post(`/v1/marketplace-services/${service.id}/recover`, { since: new Date().toISOString() }), 409, /not active/)
  t.equal((await client.delete(`/v1/marketplace-services/${service.id}/activation`)).statusCode, 204, 'it can still be deactivated')
  assertProblem(t, await client.get(`/v1/marketplace-services/${service.id}`), 404, /not found/)
})
