import t from 'tap'
import { setupApp } from '../helpers/app.js'
import { assertProblem } from '../helpers/assertions.js'
import { buildWorld } from '../helpers/world.js'

// An id is a UUID in either case (RFC 9562); Baton writes them in lower case and lowers one given in
// upper case as it validates it, wherever it is (path, query, body): the same request then answers
// alike whichever case its ids were written in.
const ctx = await setupApp(t)
const world = await buildWorld(ctx)
const up = (id: string) => id.toUpperCase()
const a = world.a.client

t.test('an id in upper case names the same thing as in lower case', async (t) => {
  const tenant = await ctx.operator.patch(`/v1/tenants/${up(world.a.id)}`, { webId: world.a.webId })
  t.equal(tenant.statusCode, 200, 'a tenant keeps its own webId, its id given in upper case')
  t.equal(tenant.data.id, world.a.id, 'and is answered in lower case')
  t.equal((await a.patch(`/v1/users/${up(world.user.id)}`, { email: 'anna@a.example' })).statusCode, 200, 'a user keeps its own e-mail')
  t.equal((await ctx.operator.patch(`/v1/marketplace-services/${world.service.id}/parameters/${up(world.parameter.id)}`, { name: world.parameter.name })).statusCode,
    200, 'a parameter keeps its own name')
  const lower = (await a.get(`/v1/process-instances?templateId=${world.template.id}`)).data.items.map((i: { id: string }) => i.id)
  const upper = (await a.get(`/v1/process-instances?templateId=${up(world.template.id)}`)).data.items.map((i: { id: string }) => i.id)
  t.same(upper, lower, 'a filter in the query')
  t.ok(lower.length > 0)

  const started = await a.post('/v1/process-instances', { templateId: up(world.template.id), responsibleUserId: up(world.user.id), propertyId: up(world.property.id) })
  t.equal(started.statusCode, 201, started.body)
  t.match(started.data, { templateId: world.template.id, responsibleUserId: world.user.id, propertyId: world.property.id }, 'ids in a body')
  const current = started.data.steps.find((s: { state: string }) => s.state === 'due')
  const advanced = await a.post(`/v1/process-instances/${up(started.data.id)}/advance`, { outcome: 'skipped', stepId: up(current.id) })
  t.equal(advanced.statusCode, 200, `the current step named in upper case is the current step (${advanced.body.slice(0, 200)})`)
})

t.test('an apiClaim names its record in either case', async (t) => {
  const claimed = ctx.as(world.claim)
  t.equal((await claimed.get(`/v1/properties/${up(world.property.id)}`)).statusCode, 200)
  assertProblem(t, await claimed.get(`/v1/properties/${up(world.address.id)}`), 403)
})

t.test('an id with a urn:uuid: prefix is refused as input, not looked up', async (t) => {
  assertProblem(t, await a.get(`/v1/process-instances/urn:uuid:${world.instance.id}`), 400, /uuid/)
})
