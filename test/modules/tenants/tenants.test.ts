import t from 'tap'
import { setupApp } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'

t.test('tenants and their API keys', async (t) => {
  const { operator, anonymous, as } = await setupApp(t)

  const created = await operator.post('/v1/tenants', { name: 'Muster Immobilien GmbH', webId: '48213' })
  t.equal(created.statusCode, 201)
  t.match(created.data, { id: String, name: 'Muster Immobilien GmbH', webId: '48213', timeZone: 'Europe/Berlin' })
  const id = created.data.id as string

  t.equal((await operator.get(`/v1/tenants/${id}`)).data.webId, '48213')
  const updated = await operator.patch(`/v1/tenants/${id}`, { timeZone: 'America/New_York' })
  t.equal(updated.data.timeZone, 'America/New_York')

  assertProblem(t, await operator.post('/v1/tenants', { name: 'Copy', webId: '48213' }), 409, /webId/)
  assertProblem(t, await operator.post('/v1/tenants', { name: 'X', webId: 'x1', timeZone: 'Mars/Olympus' }), 422, /time zone/)
  assertProblem(t, await operator.post('/v1/tenants', { name: 42, webId: 'x2' }), 400, /\/body\/name/)
  assertProblem(t, await operator.post('/v1/tenants', { webId: 'x3' }), 400, /name/)
  assertProblem(t, await operator.post('/v1/tenants', { name: 'X', webId: 'x4', extra: true }), 400, /extra/)
  assertProblem(t, await operator.get('/v1/tenants/not-a-uuid'), 400)
  assertProblem(t, await operator.get('/v1/tenants/00000000-0000-4000-8000-000000000000'), 404)

  const key = await operator.post(`/v1/tenants/${id}/api-keys`, { name: 'crm' })
  t.equal(key.statusCode, 201)
  t.match(key.data, { name: 'crm', key: /^btk_/, prefix: String, revokedAt: null })
  const keys = await operator.get(`/v1/tenants/${id}/api-keys`)
  t.equal(keys.data.items.length, 1)
  t.notOk('key' in keys.data.items[0], 'list never shows the secret')

  const tenantClient = as(key.data.key)
  t.equal((await tenantClient.get('/v1/users')).statusCode !== 401, true, 'the new key works')
  assertProblem(t, await tenantClient.get('/v1/tenants'), 403)
  assertProblem(t, await anonymous.get('/v1/tenants'), 401)
  assertProblem(t, await as('btk_wrong').get('/v1/tenants'), 401)

  const revoked = await operator.delete(`/v1/tenants/${id}/api-keys/${key.data.id}`)
  t.equal(revoked.statusCode, 204)
  assertProblem(t, await tenantClient.get('/v1/users'), 401, /revoked/)
  assertProblem(t, await operator.delete(`/v1/tenants/${id}/api-keys/00000000-0000-4000-8000-000000000000`), 404)

  const second = await operator.post(`/v1/tenants/${id}/api-keys`, { name: 'erp' })
  t.equal((await as(second.data.key).get('/v1/users')).statusCode, 200, 'the second key works (and is now known to this process)')
  t.equal((await operator.delete(`/v1/tenants/${id}`)).statusCode, 204)
  assertProblem(t, await operator.get(`/v1/tenants/${id}`), 404)
  assertProblem(t, await as(second.data.key).get('/v1/users'), 401) // a deleted tenant's key stops working at once
})

t.test('tenant lists page with an opaque cursor', async (t) => {
  const { operator } = await setupApp(t)
  for (let i = 0; i < 5; i++) await operator.post('/v1/tenants', { name: `T${i}`, webId: `page${i}` })
  const first = await operator.get('/v1/tenants?limit=2')
  t.equal(first.data.items.length, 2)
  t.type(first.data.nextCursor, 'string')
  const seen = [...first.data.items]
  let cursor = first.data.nextCursor
  while (cursor) {
    const page = await operator.get(`/v1/tenants?limit=2&cursor=${cursor}`)
    seen.push(...page.data.items)
    cursor = page.data.nextCursor
  }
  t.same(seen.map((x) => x.webId), ['page0', 'page1', 'page2', 'page3', 'page4'])
  assertProblem(t, await operator.get('/v1/tenants?cursor=garbage'), 400)
  assertProblem(t, await operator.get('/v1/tenants?limit=500'), 400)
})
