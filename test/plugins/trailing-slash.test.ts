import t from 'tap'
import { setupApp } from '../helpers/app.js'
import { assertProblem } from '../helpers/assertions.js'

// A trailing slash names the same resource as the path without it, as clients that join a base URL and a path expect.
const ctx = await setupApp(t)
const { client } = await ctx.newTenant()
const user = await client.post('/v1/users', { name: 'Anna Berg', email: 'anna@example.com' })

t.test('a collection or a record with a trailing slash answers as without it', async (t) => {
  const list = await client.get('/v1/users/')
  t.equal(list.statusCode, 200, list.body)
  t.same(list.data.items.map((u: { id: string }) => u.id), [user.data.id])
  const one = await client.get(`/v1/users/${user.data.id}/`)
  t.equal(one.statusCode, 200, one.body)
  t.equal(one.data.id, user.data.id, 'a route whose last segment is a parameter gets the id, not the id and a slash')
  const created = await client.post('/v1/users/', { name: 'Ben', email: 'ben@example.com' })
  t.equal(created.statusCode, 201, created.body)
  t.equal(created.headers.location, `/v1/users/${created.data.id}`, 'the new record\'s Location has no double slash')
  t.equal((await client.get('/v1/process-templates/')).statusCode, 200)

  const wrongMethod = await client.put('/v1/users/', { name: 'x' })
  assertProblem(t, wrongMethod, 405)
  t.equal(wrongMethod.headers.allow, 'GET, HEAD, POST')
})

t.test('probes, metrics and the document answer with a trailing slash too', async (t) => {
  t.same((await ctx.anonymous.get('/health/live/')).data, { status: 'ok' })
  t.same((await ctx.anonymous.get('/health/ready/')).data, { status: 'ok' })
  const metrics = await ctx.operator.get('/metrics/')
  t.equal(metrics.statusCode, 200)
  t.match(metrics.body, /^baton_steps\{state="due"\} 0$/m)
  assertProblem(t, await ctx.anonymous.get('/metrics/'), 401)
  t.equal((await ctx.anonymous.get('/openapi.json/')).data.openapi, '3.0.3')
  t.equal((await ctx.anonymous.get('/docs/')).statusCode, 200, 'the explorer still serves its page')
})

t.test('an empty id is no route (404), not an id that fails validation', async (t) => {
  assertProblem(t, await client.get('/v1/users//'), 404, /No route GET \/v1\/users\/\//)
  assertProblem(t, await client.get('/v1/process-templates//steps'), 404)
  assertProblem(t, await client.get('/v1/no-such-thing/'), 404)
  const put = await client.put('/v1/users//', { name: 'x' })
  assertProblem(t, put, 404) // not a 405 naming GET, which answers 404 there too
  t.equal(put.headers.allow, undefined)
  assertProblem(t, await client.put('/v1/process-templates//steps', {}), 404)
})
