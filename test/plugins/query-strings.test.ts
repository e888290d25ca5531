import t from 'tap'
import { setupApp } from '../helpers/app.js'
import { assertProblem } from '../helpers/assertions.js'
import { addTaskStep, createTemplate, createUser } from '../modules/templates/fixtures.js'

// One app and database for the file: each test works in a tenant of its own.
const ctx = await setupApp(t)

t.test('a query parameter a list does not take is refused and named, not ignored', async (t) => {
  const { client } = await ctx.newTenant()
  await createTemplate(client)

  const typo = await client.get('/v1/process-instances?statuss=running')
  assertProblem(t, typo, 400, /does not take: statuss\./)
  t.same(typo.data.errors, [{ pointer: '/querystring/statuss', detail: 'unknown query parameter (this route takes limit, cursor, status, currentStepState, assigneeUserId, templateId, propertyId, addressId, parentId)' }])

  const two = await client.get('/v1/process-templates?activ=true&limit=2&Q=x')
  assertProblem(t, two, 400, /parameters this route does not take: activ, Q\./)
  t.same(two.data.errors.map((e: { pointer: string }) => e.pointer), ['/querystring/activ', '/querystring/Q'])

  const mixed = await client.get('/v1/users?limit=0&nmae=Anna')
  assertProblem(t, mixed, 400, /does not take: nmae/)
  t.same(mixed.data.errors.map((e: { pointer: string }) => e.pointer).sort(), ['/querystring/limit', '/querystring/nmae'], 'the other errors are told too')

  assertProblem(t, await client.get('/v1/deliveries?instanceid=00000000-0000-4000-8000-000000000000'), 400, /\/querystring\/instanceid/)
  const declared = await client.get('/v1/process-templates?active=false&q=Val&limit=2')
  t.equal(declared.statusCode, 200, 'the parameters a list declares are taken')
  t.equal(declared.data.items.length, 1)
})

t.test('a route that takes no query string refuses one', async (t) => {
  const { client, key } = await ctx.newTenant()
  const user = await createUser(client)

  const read = await client.get(`/v1/users/${user}?fields=name`)
  assertProblem(t, read, 400, /does not take: fields/)
  t.same(read.data.errors, [{ pointer: '/querystring/fields', detail: 'unknown query parameter (this route takes none)' }])
  const head = await ctx.app.inject({ method: 'HEAD', url: `/v1/users/${user}?x=1`, headers: { authorization: `Bearer ${key}` } })
  t.equal(head.statusCode, 400, 'HEAD as GET')

  assertProblem(t, await client.post('/v1/users?dryRun=true', { name: 'Ben', email: 'ben@example.com' }), 400, /does not take: dryRun/)
  t.equal((await client.get('/v1/users?email=ben@example.com')).data.items.length, 0, 'the refused request made nothing')
  assertProblem(t, await client.delete(`/v1/users/${user}?force=1`), 400, /does not take: force/)
  t.equal((await client.get(`/v1/users/${user}`)).statusCode, 200, 'nor deleted anything')

  t.equal((await ctx.anonymous.get('/health/ready?verbose=1')).statusCode, 200, 'probes are called by infrastructure and ignore a query string, as the worker\'s do')
  t.equal((await ctx.anonymous.get('/health/live?cachebust=1')).statusCode, 200)
})

t.test('limit is a whole number in decimal digits: nothing else JavaScript would read as one', async (t) => {
  const { client } = await ctx.newTenant()
  for (const limit of ['1e2', '1.0', '%205', '5%20', '0x10', '0b1', '+5', '', '1_0', 'Infinity']) {
    for (const list of ['/v1/users', '/v1/process-instances', '/v1/process-templates']) {
      const response = await client.get(`${list}?limit=${limit}`)
      assertProblem(t, response, 400)
      t.same(response.data.errors, [{ pointer: '/querystring/limit', detail: 'must be a whole number written in decimal digits (e.g. 50)' }], `${list}?limit=${limit}`)
    }
  }
  assertProblem(t, await ctx.operator.get('/v1/tenants?limit=1e1'), 400, /\/querystring\/limit/)
  t.equal((await client.get('/v1/users?limit=100')).statusCode, 200)
  t.equal((await client.get('/v1/users?limit=007')).statusCode, 200, 'leading zeros are still decimal digits')
  assertProblem(t, await client.get('/v1/users?limit=201'), 400, /must be at most 200/)
  assertProblem(t, await client.get('/v1/users?limit=-1'), 400, /must be at least 1/)
})

t.test('a parameter given twice is told so, not that it is no number or no allowed value', async (t) => {
  const { client } = await ctx.newTenant()
  for (const [url, name] of [['/v1/users?limit=1&limit=2', 'limit'], ['/v1/process-instances?status=running&status=completed', 'status'], ['/v1/process-templates?q=a&q=b', 'q']]) {
    const response = await client.get(url!)
    assertProblem(t, response, 400)
    t.same(response.data.errors, [{ pointer: `/querystring/${name}`, detail: 'is given more than once; send it once' }], url!)
  }
})

t.test('a cursor is read only by the list that issued it', async (t) => {
  const { client } = await ctx.newTenant()
  for (const name of ['Anna', 'Ben', 'Cleo']) await createUser(client, name)
  const first = await createTemplate(client, { name: 'First' })
  const second = await createTemplate(client, { name: 'Second' })
  for (const name of ['a', 'b', 'c']) {
    await addTaskStep(client, first, name)
    await addTaskStep(client, second, name)
  }

  const templates = await client.get('/v1/process-templates?limit=1')
  const templatesCursor = templates.data.nextCursor as string
  const foreign = await client.get(`/v1/users?limit=1&cursor=${templatesCursor}`)
  assertProblem(t, foreign, 400, /does not belong to this list/)
  t.same(foreign.data.errors, [{ pointer: '/querystring/cursor', detail: 'cursor does not belong to this list' }])
  t.equal((await client.get(`/v1/process-templates?limit=1&cursor=${templatesCursor}`)).data.items[0].name, 'Second', 'its own list reads it')
  t.equal((await client.get(`/v1/process-templates?limit=1&active=false&cursor=${templatesCursor}`)).statusCode, 200, 'also filtered: the list is the same')

  const steps = await client.get(`/v1/process-templates/${first}/steps?limit=1`)
  const stepsCursor = steps.data.nextCursor as string
  assertProblem(t, await client.get(`/v1/process-templates/${second}/steps?limit=1&cursor=${stepsCursor}`), 400, /does not belong to this list/)
  assertProblem(t, await client.get(`/v1/process-templates?cursor=${stepsCursor}`), 400, /does not belong to this list/)
  t.equal((await client.get(`/v1/process-templates/${first}/steps?limit=1&cursor=${stepsCursor}`)).data.items[0].name, 'b')
  t.equal((await client.get(`/v1/process-templates/${first.toUpperCase()}/steps?limit=1&cursor=${stepsCursor}`)).statusCode, 200, 'the parent\'s id in upper case is the same parent')

  const users = await client.get('/v1/users?limit=1')
  const legacy = Buffer.from(`v1:${users.data.items[0].id}`).toString('base64url')
  const upgraded = await client.get(`/v1/users?limit=1&cursor=${legacy}`)
  t.equal(upgraded.statusCode, 200, 'a cursor issued before cursors named their list is still read')
  t.equal(upgraded.data.items[0].id, (await client.get(`/v1/users?limit=1&cursor=${users.data.nextCursor}`)).data.items[0].id)
})

t.test('a cursor is read only by the caller it was issued to: another tenant\'s, or the operator\'s, is refused', async (t) => {
  const a = await ctx.newTenant()
  const b = await ctx.newTenant()
  for (const name of ['Anna', 'Ben']) {
    await createUser(a.client, name)
    await createUser(b.client, name)
    await createTemplate(a.client, { name })
  }
  for (const list of ['/v1/users', '/v1/process-templates']) {
    const cursor = (await a.client.get(`${list}?limit=1`)).data.nextCursor as string
    const foreign = await b.client.get(`${list}?limit=1&cursor=${cursor}`)
    assertProblem(t, foreign, 400, /does not belong to this list/)
    t.same(foreign.data.errors, [{ pointer: '/querystring/cursor', detail: 'cursor does not belong to this list' }], `${list}: B cannot go on from A's page`)
  }
  const users = await a.client.get('/v1/users?limit=1')
  t.equal((await a.client.get(`/v1/users?limit=1&cursor=${users.data.nextCursor}`)).data.items[0].name, 'Ben', 'A goes on from its own page')

  // The operator sees every service, a tenant those it may use: two lists at one route.
  for (const name of ['One', 'Two']) await ctx.operator.post('/v1/marketplace-services', { name, provider: 'P', webhookUrl: 'https://p.example/hook' })
  const all = await ctx.operator.get('/v1/marketplace-services?limit=1')
  assertProblem(t, await a.client.get(`/v1/marketplace-services?limit=1&cursor=${all.data.nextCursor}`), 400, /does not belong to this list/)
  t.equal((await ctx.operator.get(`/v1/marketplace-services?limit=1&cursor=${all.data.nextCursor}`)).statusCode, 200)
})
