import { randomBytes } from 'node:crypto'
import t from 'tap'
import { sql } from '../../../src/db/kysely.js'
import { newId } from '../../../src/lib/ids.js'
import { setupApp } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { HOUR } from '../../helpers/clock.js'
import { createService, insertTemplateWithStep, SERVICE } from './fixtures/catalogue.js'

const UNKNOWN = '00000000-0000-4000-8000-000000000000'

// One app and database for the tests that neither list the whole catalogue nor move the clock.
const shared = await setupApp(t)

t.test('a delete with a stale If-Match answers 412 and keeps the service, as an update does', async (t) => {
  const { operator } = shared
  const created = await operator.post('/v1/marketplace-services', { ...SERVICE, name: 'Stale delete' })
  const url = `/v1/marketplace-services/${created.data.id}`
  t.equal((await operator.patch(url, { name: 'Changed meanwhile' }, { 'if-match': '"1"' })).statusCode, 200)
  const stale = await operator.delete(url, { 'if-match': '"1"' })
  assertProblem(t, stale, 412, /is at version 2, not 1/)
  t.equal(stale.headers.etag, '"2"', 'the answer names the current version')
  t.equal((await operator.get(url)).data.name, 'Changed meanwhile', 'the service is kept')
  assertProblem(t, await operator.delete(url, { 'if-match': '"1' }), 400, /If-Match/)
  t.equal((await operator.delete(url, { 'if-match': '"1", "2"' })).statusCode, 204, 'a list naming the current version deletes it')
})

t.test('services: create, read, list, update, delete', async (t) => {
  const { operator } = await setupApp(t)

  const created = await operator.post('/v1/marketplace-services', SERVICE)
  t.equal(created.statusCode, 201)
  t.match(created.data, { id: String, ...SERVICE, delivery: 'query', active: true, version: 1, createdAt: String, updatedAt: String })
  t.match(created.data.secret, /^whsec_[A-Za-z0-9+/]{43}=$/, 'a generated 32-byte secret in the Standard Webhooks form')
  t.equal(created.headers.etag, '"1"')
  t.notOk('activated' in created.data, 'no activation flag for the operator')
  const id = created.data.id as string

  const own = await operator.post('/v1/marketplace-services', { ...SERVICE, delivery: 'json', secret: 'a-secret-of-24-characters', active: false })
  t.match(own.data, { delivery: 'json', active: false, secret: 'a-secret-of-24-characters' })

  const read = await operator.get(`/v1/marketplace-services/${id}`)
  t.match(read.data, { id, name: 'Valuation' })
  t.equal(read.headers.etag, '"1"')

  const updated = await operator.patch(`/v1/marketplace-services/${id}`, { name: 'Valuation Pro', delivery: 'json' })
  t.match(updated.data, { name: 'Valuation Pro', delivery: 'json', version: 2 })
  t.equal(updated.headers.etag, '"2"')

  t.equal((await operator.delete(`/v1/marketplace-services/${id}`)).statusCode, 204)
  assertProblem(t, await operator.get(`/v1/marketplace-services/${id}`), 404)
  assertProblem(t, await operator.delete(`/v1/marketplace-services/${id}`), 404)
  assertProblem(t, await operator.patch(`/v1/marketplace-services/${UNKNOWN}`, { name: 'X' }), 404)
})

t.test('the secret is write-only', async (t) => {
  const { operator } = shared
  const service = await createService(operator, { secret: 'first-secret-0123456789ab' })
  const url = `/v1/marketplace-services/${service.id}`

  t.notOk('secret' in (await operator.get(url)).data, 'not in GET')
  t.notOk((await operator.get('/v1/marketplace-services')).data.items.some((s: object) => 'secret' in s), 'not in the list')
  const patched = await operator.patch(url, { secret: 'second-secret-0123456789' })
  t.equal(patched.statusCode, 200)
  t.notOk('secret' in patched.data, 'not in the PATCH response')
  t.notMatch(patched.body, /secret-0123456789/)
})

t.test('a new secret keeps the old one valid for 24 hours', async (t) => {
  const { operator, db, clock } = await setupApp(t)
  const service = await createService(operator, { secret: 'first-secret-0123456789ab' })
  await operator.patch(`/v1/marketplace-services/${service.id}`, { secret: 'second-secret-0123456789' })

  const row = await db.selectFrom('marketplace_services').selectAll().where('id', '=', service.id).executeTakeFirstOrThrow()
  t.equal(row.secret, 'second-secret-0123456789')
  t.equal(row.previous_secret, 'first-secret-0123456789ab')
  t.equal(row.previous_secret_expires_at?.getTime(), clock.now().getTime() + 24 * HOUR)

  await operator.patch(`/v1/marketplace-services/${service.id}`, { name: 'Renamed' })
  const after = await db.selectFrom('marketplace_services').selectAll().where('id', '=', service.id).executeTakeFirstOrThrow()
  t.equal(after.previous_secret, 'first-secret-0123456789ab', 'other changes leave the rotation alone')
})

t.test('a PATCH that changes nothing keeps the version, the ETag and updatedAt; the same secret is no change', async (t) => {
  const { operator, db, clock } = await setupApp(t, { BATON_SECRETS_KEY: randomBytes(32).toString('base64') })
  const secret = 'first-secret-0123456789ab'
  const { secret: _shown, ...created } = await createService(operator, { secret })
  const url = `/v1/marketplace-services/${created.id}`
  const row = () => db.selectFrom('marketplace_services').selectAll().where('id', '=', created.id).executeTakeFirstOrThrow()
  const stored = await row()
  clock.advance(HOUR)
  for (const body of [
    { name: SERVICE.name }, { provider: SERVICE.provider, webhookUrl: SERVICE.webhookUrl, delivery: 'query', active: true }, { secret }
  ]) {
    const same = await operator.patch(url, body, { 'if-match': '"1"' })
    t.equal(same.statusCode, 200, JSON.stringify(body))
    t.same(same.data, created, `${Object.keys(body).join(', ')}: the service as it was, updatedAt too`)
    t.equal(same.headers.etag, '"1"')
  }
  t.same(await row(), stored, 'stored unchanged: the secret neither sealed again nor rotated')
  assertProblem(t, await operator.patch(url, { name: SERVICE.name }, { 'if-match': '"0"' }), 412, /version 1/)
  const rotated = await operator.patch(url, { secret: 'second-secret-0123456789' }, { 'if-match': '"1"' })
  t.same([rotated.data.version, rotated.headers.etag], [2, '"2"'], 'a new secret still moves the version')
})

t.test('If-Match guards updates', async (t) => {
  const { operator } = shared
  const service = await createService(operator)
  const url = `/v1/marketplace-services/${service.id}`

  t.equal((await operator.patch(url, { name: 'A' }, { 'if-match': '"1"' })).statusCode, 200)
  const stale = await operator.patch(url, { name: 'B' }, { 'if-match': '"1"' })
  assertProblem(t, stale, 412, /version 2/)
  t.equal(stale.headers.etag, '"2"', 'a 412 carries the current ETag')
  t.equal((await operator.patch(url, { name: 'B' }, { 'if-match': 'W/"2"' })).data.version, 3)
  t.equal((await operator.patch(url, { name: 'C' }, { 'if-match': '*' })).statusCode, 200)
  assertProblem(t, await operator.patch(url, { name: 'D' }, { 'if-match': 'yesterday' }), 400, /if-match/)
  assertProblem(t, await operator.patch(url, { name: 'D' }, { 'if-match': '"1", "2"' }), 412, /at version 4, not 1 or 2/)
  assertProblem(t, await operator.patch(url, { name: 'D' }, { 'if-match': '"4", x' }), 400, /if-match/)
  t.equal((await operator.get(url)).data.name, 'C')
  t.equal((await operator.patch(url, { name: 'D' }, { 'if-match': '"3", "4"' })).data.version, 5, 'a list matches when any of its versions is current')
})

t.test('updates without If-Match that race each other all apply; with a stale If-Match one of them answers 412', async (t) => {
  const { operator } = shared
  const service = await createService(operator)
  const url = `/v1/marketplace-services/${service.id}`

  const fields = [{ name: 'Renamed' }, { provider: 'Other Co' }, { webhookUrl: 'https://other.example/hook' }, { active: false }]
  const raced = await Promise.all(fields.map((body) => operator.patch(url, body)))
  t.same(raced.map((r) => r.statusCode), [200, 200, 200, 200], raced.map((r) => r.body).join('\n'))
  t.match((await operator.get(url)).data, { name: 'Renamed', provider: 'Other Co', webhookUrl: 'https://other.example/hook', active: false, version: 5 },
    'every update is kept')

  const guarded = await Promise.all([{ name: 'X' }, { name: 'Y' }].map((body) => operator.patch(url, body, { 'if-match': '"5"' })))
  t.same(guarded.map((r) => r.statusCode).sort(), [200, 412], 'the same If-Match lets one of two through')
})

t.test('schema failures answer 400', async (t) => {
  const { operator } = shared
  const service = await createService(operator)
  const post = (body: unknown) => operator.post('/v1/marketplace-services', body)

  assertProblem(t, await post({ provider: 'P', webhookUrl: 'https://x.example' }), 400, /name/)
  assertProblem(t, await post({ ...SERVICE, delivery: 'soap' }), 400, /\/body\/delivery/)
  assertProblem(t, await post({ ...SERVICE, secret: 'too-short' }), 400, /\/body\/secret/)
  assertProblem(t, await post({ ...SERVICE, active: 'yes' }), 400, /\/body\/active/)
  assertProblem(t, await post({ ...SERVICE, extra: 1 }), 400, /extra/)
  assertProblem(t, await operator.patch(`/v1/marketplace-services/${service.id}`, {}), 400)
  assertProblem(t, await operator.patch(`/v1/marketplace-services/${service.id}`, { secret: 'short' }), 400)
  assertProblem(t, await operator.get('/v1/marketplace-services/not-a-uuid'), 400)
  assertProblem(t, await operator.get('/v1/marketplace-services?limit=0'), 400)
  assertProblem(t, await operator.get('/v1/marketplace-services?cursor=garbage'), 400)
})

t.test('the webhook URL must be an http(s) URL with a host and no credentials', async (t) => {
  const { operator } = shared
  const service = await createService(operator)
  for (const webhookUrl of ['not a url', '/relative/path', 'ftp://provider.example/hook', 'javascript:alert(1)',
    'https://user:pass@provider.example/hook', 'https://user@provider.example/hook', 'file:///etc/passwd']) {
    const response = await operator.post('/v1/marketplace-services', { ...SERVICE, webhookUrl })
    assertProblem(t, response, 422)
    t.match(response.data.errors, [{ pointer: '/body/webhookUrl' }], webhookUrl)
  }
  const reasons: [string, RegExp][] = [
    ['ftp://provider.example/hook', /the scheme must be http or https/],
    ['http://', /not a valid absolute URL/],
    ['https://', /not a valid absolute URL/],
    ['https://:secret@provider.example/hook', /must not contain a user name or password/],
    ['https://user:pass@provider.example/hook', /must not contain a user name or password/],
    ['https://provider.example:0/hook', /the port must be between 1 and 65535/],
    ['http://provider.example:00/hook', /the port must be between 1 and 65535/]
  ]
  for (const [webhookUrl, detail] of reasons) {
    const response = await operator.post('/v1/marketplace-services', { ...SERVICE, webhookUrl })
    assertProblem(t, response, 422)
    t.match(response.data.errors, [{ pointer: '/body/webhookUrl', detail }], `${webhookUrl}: says why`)
  }
  for (const webhookUrl of ['ftp://provider.example', 'https://user:pass@provider.example/hook', 'https://provider.example:0/hook']) {
    const patched = await operator.patch(`/v1/marketplace-services/${service.id}`, { webhookUrl })
    assertProblem(t, patched, 422)
    t.match(patched.data.errors, [{ pointer: '/body/webhookUrl' }], `PATCH ${webhookUrl}`)
  }
  t.equal((await operator.get(`/v1/marketplace-services/${service.id}`)).data.webhookUrl, service.webhookUrl, 'a refused change leaves the URL as it was')
  const withQuery = await operator.post('/v1/marketplace-services', { ...SERVICE, webhookUrl: 'http://provider.example:8080/hook?x=1' })
  t.equal(withQuery.statusCode, 201, 'a port and a query are fine')
})

t.test('a query service\'s URL has no query key PHP would read otherwise than Baton signs it', async (t) => {
  const { operator, db } = shared
  const hook = 'https://provider.example/hook.php'
  const refused: [string, RegExp][] = [
    ['?api.key=abc', /PHP reads the query key "api\.key" as "api_key"/],
    ['?my%20key=1', /"my key" as "my_key"/],
    ['?my+key=1', /"my key" as "my_key"/],
    ['?+lead=1', /" lead" as "lead"/],
    ['?=1', /PHP drops the query key ""/],
    ['?a=1&+=2', /PHP drops the query key " "/],
    ['?opts[a]=1', /"opts\[a\]" as an array/],
    ['?opts%5Ba%5D=1', /"opts\[a\]" as an array/],
    ['?a[b=1', /"a\[b" as an array/],
    ['?a%00b=1', /PHP cuts the query key "a\\u0000b" at its NUL byte/]
  ]
  for (const [query, why] of refused) {
    const response = await operator.post('/v1/marketplace-services', { ...SERVICE, webhookUrl: hook + query })
    assertProblem(t, response, 422, /could not check the signature/)
    t.match(response.data.errors, [{ pointer: '/body/webhookUrl', detail: why }], `${query}: names the key and why`)
  }
  // Latin-1, as an older PHP provider may have written its URL: the URL parser reads %F6 as U+FFFD, which the call would carry.
  for (const query of ['?ort=K%F6ln', '?token=%FF%FE', '?%F6rt=1', '?a=%C3']) {
    const response = await operator.post('/v1/marketplace-services', { ...SERVICE, webhookUrl: hook + query })
    assertProblem(t, response, 422, /not UTF-8/)
    t.match(response.data.errors, [{ pointer: '/body/webhookUrl', detail: new RegExp(`"${query.slice(1)}" is not UTF-8`) }], `${query}: names the parameter`)
  }
  // Baton sets its own parameters on each call: a key of the URL's with one of their names would lose its value.
  for (const key of ['timestamp', 'deliveryId', 'signature', 'apiClaim']) {
    const response = await operator.post('/v1/marketplace-services', { ...SERVICE, webhookUrl: `${hook}?${key}=x` })
    assertProblem(t, response, 422)
    t.match(response.data.errors, [{ pointer: '/body/webhookUrl', detail: new RegExp(`"${key}" is one of the parameters Baton sets on each call`) }], `?${key}=x`)
  }
  for (const query of ['?a=1&b-c=2', '?a]b=1', '?x=a.b+c[d]%00', '?%E2%82%AC=1', '?a%09b=1', '?ort=K%C3%B6ln&x=%25F6', '?Timestamp=1']) {
    const response = await operator.post('/v1/marketplace-services', { ...SERVICE, webhookUrl: hook + query })
    t.equal(response.statusCode, 201, `${query}: PHP reads these keys as they are, values as they come`)
  }

  const json = await createService(operator, { webhookUrl: `${hook}?api.key=abc`, delivery: 'json' })
  t.pass('a json service signs no query: any key is fine')
  const toQuery = await operator.patch(`/v1/marketplace-services/${json.id}`, { delivery: 'query' })
  assertProblem(t, toQuery, 422)
  t.match(toQuery.data.errors, [{ pointer: '/body/delivery', detail: /"api\.key" as "api_key"/ }], 'nor may it turn to query with that URL')
  const query = await createService(operator, { webhookUrl: hook })
  const patched = await operator.patch(`/v1/marketplace-services/${query.id}`, { webhookUrl: `${hook}?opts[a]=1` })
  assertProblem(t, patched, 422)
  t.match(patched.data.errors, [{ pointer: '/body/webhookUrl' }], 'PATCH of a query service\'s URL')

  // A query service stored with such a URL before the rule keeps it and can still be changed otherwise.
  await db.updateTable('marketplace_services').set({ delivery: 'query' }).where('id', '=', json.id).execute()
  const renamed = await operator.patch(`/v1/marketplace-services/${json.id}`, { name: 'Renamed', delivery: 'query' })
  t.equal(renamed.statusCode, 200, renamed.body)
  t.match(renamed.data, { webhookUrl: `${hook}?api.key=abc`, delivery: 'query' })
})

t.test('only the operator writes the catalogue', async (t) => {
  const { operator, anonymous, newTenant } = shared
  const { client } = await newTenant()
  const service = await createService(operator)
  const url = `/v1/marketplace-services/${service.id}`

  assertProblem(t, await client.post('/v1/marketplace-services', SERVICE), 403)
  assertProblem(t, await client.patch(url, { name: 'Mine' }), 403)
  assertProblem(t, await client.delete(url), 403)
  assertProblem(t, await anonymous.get('/v1/marketplace-services'), 401)
  t.equal((await operator.get(url)).data.name, 'Valuation', 'unchanged')
})

t.test('tenants see active services and the ones they activated', async (t) => {
  const { operator, newTenant } = await setupApp(t)
  const { client } = await newTenant()
  const open = await createService(operator, { name: 'Open', provider: 'Acme' })
  const hidden = await createService(operator, { name: 'Hidden', active: false })
  const retired = await createService(operator, { name: 'Retired', provider: 'Acme' })
  t.equal((await client.put(`/v1/marketplace-services/${retired.id}/activation`)).statusCode, 200)
  await operator.patch(`/v1/marketplace-services/${retired.id}`, { active: false })

  const names = async (query = '') =>
    (await client.get(`/v1/marketplace-services${query}`)).data.items.map((s: { name: string }) => s.name)
  t.same(await names(), ['Open', 'Retired'])
  t.same(await names('?activated=true'), ['Retired'])
  t.same(await names('?activated=false'), ['Open'])
  t.same(await names('?active=true'), ['Open'])
  t.same(await names('?provider=Acme&active=false'), ['Retired'])

  const list = await client.get('/v1/marketplace-services')
  t.match(list.data.items, [{ name: 'Open', activated: false }, { name: 'Retired', activated: true, active: false }])
  t.notOk(list.data.items.some((s: object) => 'secret' in s), 'no secrets for tenants')

  t.match((await client.get(`/v1/marketplace-services/${open.id}`)).data, { name: 'Open', activated: false })
  t.match((await client.get(`/v1/marketplace-services/${retired.id}`)).data, { name: 'Retired', activated: true })
  assertProblem(t, await client.get(`/v1/marketplace-services/${hidden.id}`), 404)

  t.same((await operator.get('/v1/marketplace-services')).data.items.map((s: { name: string }) => s.name), ['Open', 'Hidden', 'Retired'])
  t.same((await operator.get('/v1/marketplace-services?active=false')).data.items.length, 2)
  assertProblem(t, await operator.get('/v1/marketplace-services?activated=true'), 422, /\/querystring\/activated/)
})

t.test('service lists page with an opaque cursor', async (t) => {
  const { operator } = await setupApp(t)
  for (let i = 0; i < 5; i++) await createService(operator, { name: `S${i}` })
  const seen: string[] = []
  let cursor: string | null = ''
  while (cursor !== null) {
    const page = await operator.get(`/v1/marketplace-services?limit=2${cursor ? `&cursor=${cursor}` : ''}`)
    t.ok(page.data.items.length <= 2)
    seen.push(...page.data.items.map((s: { name: string }) => s.name))
    cursor = page.data.nextCursor
  }
  t.same(seen, ['S0', 'S1', 'S2', 'S3', 'S4'])
})

t.test('a service that a template step uses cannot be deleted', async (t) => {
  const { operator, db, newTenant } = shared
  const tenant = await newTenant()
  const service = await createService(operator)
  const { templateId } = await insertTemplateWithStep(db, { tenantId: tenant.id, serviceId: service.id, templateName: 'Yearly valuation' })

  const refused = await operator.delete(`/v1/marketplace-services/${service.id}`)
  assertProblem(t, refused, 409, /Yearly valuation/)
  t.match(refused.data.detail, templateId)
  t.equal((await operator.get(`/v1/marketplace-services/${service.id}`)).statusCode, 200, 'still there')

  await db.deleteFrom('process_templates').where('id', '=', templateId).execute()
  t.equal((await operator.delete(`/v1/marketplace-services/${service.id}`)).statusCode, 204, 'free once the template is gone')
})

t.test('a service that a step comes to use while it is being deleted is refused with the template named, not deleted', async (t) => {
  const { operator, db, newTenant } = shared
  const tenant = await newTenant()
  const used = await createService(operator)
  const service = await createService(operator)
  const { stepId } = await insertTemplateWithStep(db, { tenantId: tenant.id, serviceId: used.id, templateName: 'Yearly valuation' })

  // A step turns to the service in a transaction that is still open when the delete comes.
  let deleting: ReturnType<typeof operator.delete> | undefined
  await db.transaction().execute(async (trx) => {
    await trx.updateTable('template_steps').set({ service_id: service.id }).where('tenant_id', '=', tenant.id).where('id', '=', stepId).execute()
    deleting = operator.delete(`/v1/marketplace-services/${service.id}`)
    for (let waited = 0; ; waited += 20) {
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
        where datname = current_database() and wait_event_type = 'Lock' and query ilike '%marketplace_services%'`.execute(db)
      if (rows[0]!.n > 0) break
      if (waited > 5_000) throw new Error('the delete never waited for the step\'s transaction')
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  })
  const refused = await deleting!
  assertProblem(t, refused, 409, /Yearly valuation/)
  t.equal((await operator.get(`/v1/marketplace-services/${service.id}`)).statusCode, 200, 'still there')
})

t.test('a service with deliveries on record cannot be deleted', async (t) => {
  const { operator, db, newTenant } = shared
  const tenant = await newTenant()
  const service = await createService(operator)
  await db.insertInto('deliveries')
    .values({ tenant_id: tenant.id, id: newId(), service_id: service.id, source: 'trigger', parameters: '{}', next_attempt_at: new Date() })
    .execute()
  assertProblem(t, await operator.delete(`/v1/marketplace-services/${service.id}`), 409, /deactivate it instead/)
})

t.test('a service\'s name or provider of whitespace only answers 422 at the field, on create and update', async (t) => {
  const { operator } = shared
  const service = await createService(operator)
  const url = `/v1/marketplace-services/${service.id}`
  for (const blank of [' ', '\t\n', '\u00a0\u3000']) {
    for (const [response, pointers] of [
      [await operator.post('/v1/marketplace-services', { ...SERVICE, name: blank }), ['/body/name']],
      [await operator.post('/v1/marketplace-services', { ...SERVICE, name: blank, provider: blank }), ['/body/name', '/body/provider']],
      [await operator.patch(url, { provider: blank }), ['/body/provider']]
    ] as const) {
      assertProblem(t, response, 422, /may not be blank/)
      t.same(response.data.errors.map((e: { pointer: string }) => e.pointer), pointers, JSON.stringify(blank))
    }
  }
  t.match((await operator.get(url)).data, { name: service.name, provider: service.provider, version: 1 }, 'unchanged')
})
