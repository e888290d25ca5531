import { randomUUID } from 'node:crypto'
import t from 'tap'
import { setupApp } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { activate, addTaskStep, createTemplate, createUser, valuationService } from './fixtures.js'

// One app and database for the file: each test works in tenants of its own.
const ctx = await setupApp(t)

const MISSING = '00000000-0000-4000-8000-000000000000'

t.test('templates: create, read, list, update, delete', async (t) => {
  const { client } = await ctx.newTenant()
  const controller = await createUser(client)

  const created = await client.post('/v1/process-templates', {
    name: 'Valuation', description: 'Re-value a property', controllerUserId: controller, notifyOnCompletion: true
  })
  t.equal(created.statusCode, 201)
  t.match(created.data, {
    id: String, name: 'Valuation', description: 'Re-value a property', active: false, controllerUserId: controller,
    notifyOnCompletion: true, version: 1, createdAt: String, updatedAt: String, steps: []
  })
  t.equal(created.headers.etag, '"1"')
  const id = created.data.id as string

  const minimal = await client.post('/v1/process-templates', { name: 'Newsletter sync' })
  t.match(minimal.data, { description: '', controllerUserId: null, notifyOnCompletion: false, active: false })

  const one = await client.get(`/v1/process-templates/${id}`)
  t.equal(one.statusCode, 200)
  t.equal(one.headers.etag, '"1"')
  t.equal(one.data.name, 'Valuation')

  const updated = await client.patch(`/v1/process-templates/${id}`, { name: 'Valuation 2', controllerUserId: null }, { 'if-match': '"1"' })
  t.equal(updated.statusCode, 200)
  t.match(updated.data, { name: 'Valuation 2', controllerUserId: null, version: 2 })
  t.equal(updated.headers.etag, '"2"')

  t.equal((await client.delete(`/v1/process-templates/${minimal.data.id}`)).statusCode, 204)
  assertProblem(t, await client.get(`/v1/process-templates/${minimal.data.id}`), 404)
  assertProblem(t, await client.get(`/v1/process-templates/${MISSING}`), 404)
  assertProblem(t, await client.patch(`/v1/process-templates/${MISSING}`, { name: 'x' }), 404)
  assertProblem(t, await client.delete(`/v1/process-templates/${MISSING}`), 404)
})

t.test('template lists filter by active and name, count steps and page', async (t) => {
  const { client } = await ctx.newTenant()
  const valuation = await createTemplate(client, { name: 'Property valuation' })
  await addTaskStep(client, valuation, 'Call the owner')
  await client.patch(`/v1/process-templates/${valuation}`, { active: true })
  await createTemplate(client, { name: 'Newsletter sync' })
  await createTemplate(client, { name: 'Viewing 100%' })

  const all = await client.get('/v1/process-templates')
  t.equal(all.statusCode, 200)
  t.same(all.data.items.map((x: { name: string }) => x.name), ['Property valuation', 'Newsletter sync', 'Viewing 100%'])
  t.match(all.data.items[0], { stepCount: 1, active: true })
  t.notOk('steps' in all.data.items[0], 'the list does not carry steps')
  t.same((await client.get('/v1/process-templates?active=true')).data.items.map((x: { id: string }) => x.id), [valuation])
  t.equal((await client.get('/v1/process-templates?active=false')).data.items.length, 2)
  t.same((await client.get('/v1/process-templates?q=VALUAT')).data.items.map((x: { id: string }) => x.id), [valuation])
  t.equal((await client.get('/v1/process-templates?q=%25')).data.items.length, 1, '% matches literally')

  const first = await client.get('/v1/process-templates?limit=2')
  t.equal(first.data.items.length, 2)
  const second = await client.get(`/v1/process-templates?limit=2&cursor=${first.data.nextCursor}`)
  t.same(second.data.items.map((x: { name: string }) => x.name), ['Viewing 100%'])
  t.equal(second.data.nextCursor, null)
  assertProblem(t, await client.get('/v1/process-templates?cursor=nonsense'), 400)
})

t.test('template requests that fail their schema answer 400', async (t) => {
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client)
  assertProblem(t, await client.post('/v1/process-templates', {}), 400, /name/)
  assertProblem(t, await client.post('/v1/process-templates', { name: '' }), 400, /\/body\/name/)
  assertProblem(t, await client.post('/v1/process-templates', { name: 'x', active: true }), 400, /active/)
  assertProblem(t, await client.post('/v1/process-templates', { name: 'x', controllerUserId: 'anna' }), 400, /controllerUserId/)
  assertProblem(t, await client.patch(`/v1/process-templates/${id}`, {}), 400)
  assertProblem(t, await client.patch(`/v1/process-templates/${id}`, { active: 'yes' }), 400, /active/)
  assertProblem(t, await client.patch(`/v1/process-templates/${id}`, { name: 'x' }, { 'if-match': 'yesterday' }), 400, /If-Match/)
  for (const unbalanced of ['"1', '1"', 'W/"1', '"1", "2', '"1"", "2"']) {
    const response = await client.patch(`/v1/process-templates/${id}`, { name: 'x' }, { 'if-match': unbalanced })
    assertProblem(t, response, 400, /If-Match/)
    t.match(response.data.errors, [{ pointer: '/headers/if-match' }], `${unbalanced}: the header is named`)
  }
  assertProblem(t, await client.get('/v1/process-templates/not-a-uuid'), 400)
  assertProblem(t, await client.get('/v1/process-templates?active=maybe'), 400)
  assertProblem(t, await client.post('/v1/process-templates', { name: 'a\u0000b' }), 400, /\/body\/name/)
  const watchesNoField = await client.patch(`/v1/process-templates/${id}`, { autostart: { on: 'fieldChanged', record: 'property', field: '', responsible: 'maintainer' } })
  assertProblem(t, watchesNoField, 400)
  t.same(watchesNoField.data.errors, [{ pointer: '/body/autostart/field', detail: 'must not be empty' }], 'an empty field name is no field')
  // A field no record can hold is refused as a writeValues step's is: it would never fire.
  for (const [field, detail] of [['a,b', 'a field name may not contain a comma'], ['__proto__', '__proto__ cannot be a field: a record refuses it']]) {
    for (const on of ['fieldChanged', 'dateReached']) {
      const never = await client.patch(`/v1/process-templates/${id}`, { autostart: { on, record: 'property', field, responsible: 'maintainer' } })
      assertProblem(t, never, 422)
      t.same(never.data.errors, [{ pointer: '/body/autostart/field', detail }], `${on} on ${field}`)
    }
  }
  assertProblem(t, await client.get('/v1/process-templates?q=a%00b'), 400, /\/querystring\/q/)
})

t.test('the controller must be a user of the tenant', async (t) => {
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client)
  assertProblem(t, await client.post('/v1/process-templates', { name: 'x', controllerUserId: MISSING }), 422, /\/body\/controllerUserId/)
  assertProblem(t, await client.patch(`/v1/process-templates/${id}`, { controllerUserId: MISSING }), 422, /\/body\/controllerUserId/)
})

t.test('a stale If-Match on a template update answers 412 and changes nothing', async (t) => {
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client, { name: 'Before' })
  t.equal((await client.patch(`/v1/process-templates/${id}`, { name: 'First' }, { 'if-match': '"1"' })).statusCode, 200)
  const stale = await client.patch(`/v1/process-templates/${id}`, { name: 'Second' }, { 'if-match': '"1"' })
  assertProblem(t, stale, 412, /version 2/)
  t.equal(stale.headers.etag, '"2"', 'a 412 carries the current ETag')
  const staleDelete = await client.delete(`/v1/process-templates/${id}`, { 'if-match': '"1"' })
  assertProblem(t, staleDelete, 412)
  t.equal(staleDelete.headers.etag, '"2"')
  const current = await client.get(`/v1/process-templates/${id}`)
  t.match(current.data, { name: 'First', version: 2 })
  t.equal((await client.patch(`/v1/process-templates/${id}`, { name: 'Third' }, { 'if-match': 'W/"2"' })).statusCode, 200)
})

// A copy with If-Match copies the template the client saw (its version), or answers 412 and copies nothing.
t.test('a stale If-Match on a copy answers 412 and copies nothing', async (t) => {
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client, { name: 'Original' })
  const seen = (await client.get(`/v1/process-templates/${id}`)).data.version
  await addTaskStep(client, id, 'Added since')
  const stale = await client.post(`/v1/process-templates/${id}/copy`, {}, { 'if-match': `"${seen}"` })
  assertProblem(t, stale, 412, new RegExp(`Process template ${id} is at version ${seen + 1}`))
  t.equal(stale.headers.etag, `"${seen + 1}"`, 'a 412 carries the source\'s current ETag')
  t.same((await client.get('/v1/process-templates')).data.items.map((x: { id: string }) => x.id), [id], 'no copy')
  const fresh = await client.post(`/v1/process-templates/${id}/copy`, {}, { 'if-match': `"${seen + 1}"` })
  t.equal(fresh.statusCode, 201, fresh.body)
  t.equal(fresh.data.steps.length, 1)
  assertProblem(t, await client.post(`/v1/process-templates/${id}/copy`, {}, { 'if-match': 'garbage' }), 400, /If-Match/)
})

t.test('activation needs steps and usable services', async (t) => {
  const tenant = await ctx.newTenant()
  const { client } = tenant
  const id = await createTemplate(client)

  assertProblem(t, await client.patch(`/v1/process-templates/${id}`, { active: true }), 422, /no steps/)

  const serviceId = await valuationService(ctx.db, tenant.id)
  const step = await client.post(`/v1/process-templates/${id}/steps`, { kind: 'webhook', name: 'Value it', serviceId, parameters: { mode: 'full' } })
  t.equal(step.statusCode, 201)

  await ctx.db.updateTable('marketplace_services').set({ active: false }).where('id', '=', serviceId).execute()
  const inactive = await client.patch(`/v1/process-templates/${id}`, { active: true })
  assertProblem(t, inactive, 422, /step 1 "Value it".*not an active marketplace service/)
  t.match(inactive.data.errors, [{ pointer: '/body/active' }])

  await ctx.db.updateTable('marketplace_services').set({ active: true }).where('id', '=', serviceId).execute()
  await ctx.db.deleteFrom('service_activations').where('tenant_id', '=', tenant.id).execute()
  assertProblem(t, await client.patch(`/v1/process-templates/${id}`, { active: true }), 422, /step 1 "Value it".*not activated/)
  t.equal((await client.get(`/v1/process-templates/${id}`)).data.active, false, 'still inactive')

  await activate(ctx.db, tenant.id, serviceId)
  const activated = await client.patch(`/v1/process-templates/${id}`, { active: true })
  t.equal(activated.statusCode, 200)
  t.equal(activated.data.active, true)

  await ctx.db.updateTable('marketplace_services').set({ active: false }).where('id', '=', serviceId).execute()
  t.equal((await client.patch(`/v1/process-templates/${id}`, { name: 'Renamed' })).statusCode, 200, 'other updates still work')
  t.equal((await client.patch(`/v1/process-templates/${id}`, { active: false })).data.active, false, 'deactivating always works')
})

t.test('a template processes were started from cannot be deleted', async (t) => {
  const tenant = await ctx.newTenant()
  const user = await createUser(tenant.client)
  const id = await createTemplate(tenant.client)
  await ctx.db.insertInto('process_instances').values({
    tenant_id: tenant.id, id: randomUUID(), template_id: id, template_name: 'Valuation process',
    responsible_user_id: user, controller_user_id: user, started_at: new Date()
  }).execute()
  assertProblem(t, await tenant.client.delete(`/v1/process-templates/${id}`), 409, /1 process instance/)
  t.equal((await tenant.client.get(`/v1/process-templates/${id}`)).statusCode, 200, 'still there')
})

t.test('a copy is inactive, with equal steps under new ids', async (t) => {
  const tenant = await ctx.newTenant()
  const { client } = tenant
  const serviceId = await valuationService(ctx.db, tenant.id)
  const id = await createTemplate(client, { name: 'Valuation', description: 'd', notifyOnCompletion: true })
  await addTaskStep(client, id, 'Call the owner', { deadlineDays: 2, refersTo: { property: true }, responsibility: 'propertyMaintainer' })
  await client.post(`/v1/process-templates/${id}/steps`, { kind: 'webhook', name: 'Value it', serviceId, parameters: { mode: 'quick' } })
  await client.patch(`/v1/process-templates/${id}`, { active: true })
  const original = (await client.get(`/v1/process-templates/${id}`)).data

  const copy = await client.post(`/v1/process-templates/${id}/copy`, {})
  t.equal(copy.statusCode, 201)
  t.match(copy.data, { name: 'Copy of Valuation', description: 'd', notifyOnCompletion: true, active: false, version: 1 })
  t.not(copy.data.id, id)
  t.equal(copy.data.steps.length, 2)
  const strip = ({ id: _id, templateId: _templateId, version: _version, ...rest }: Record<string, unknown>) => rest
  t.same(copy.data.steps.map(strip), original.steps.map(strip), 'same step content')
  t.notOk(copy.data.steps.some((s: { id: string }) => original.steps.some((o: { id: string }) => o.id === s.id)), 'new step ids')
  t.ok(copy.data.steps.every((s: { templateId: string }) => s.templateId === copy.data.id))

  const named = await client.post(`/v1/process-templates/${id}/copy`, { name: 'Quick valuation' })
  t.equal(named.data.name, 'Quick valuation')
  t.equal((await client.get(`/v1/process-templates/${id}`)).data.steps.length, 2, 'the original keeps its steps')
  // Every field is optional: no body at all is an empty one, however a client sends it.
  for (const headers of [{}, { 'content-length': '0' }, { 'content-type': 'application/json' }] as Record<string, string>[]) {
    const bare = await client.post(`/v1/process-templates/${id}/copy`, undefined, headers)
    t.equal(bare.statusCode, 201, `no body, headers ${JSON.stringify(headers)}`)
    t.equal(bare.data.name, 'Copy of Valuation')
  }
  assertProblem(t, await client.post(`/v1/process-templates/${id}/copy`, 'null', { 'content-type': 'application/json' }), 400, /body/)
  assertProblem(t, await client.post(`/v1/process-templates/${id}/copy`, { name: 'x', active: true }), 400)
  assertProblem(t, await client.post(`/v1/process-templates/${MISSING}/copy`, {}), 404)
})

t.test('a copy\'s default name is cut to 200 characters, never inside one', async (t) => {
  const { client } = await ctx.newTenant()
  // 200 characters, 399 UTF-16 code units: "Copy of " and the name pass 200 in the middle of a house.
  const id = await createTemplate(client, { name: `x${'🏠'.repeat(199)}` })
  const copy = await client.post(`/v1/process-templates/${id}/copy`, {})
  t.equal(copy.statusCode, 201, copy.body)
  t.equal(copy.data.name, `Copy of x${'🏠'.repeat(191)}`, 'the first 200 characters, each whole')
  t.notMatch(copy.data.name, /\uFFFD/, 'no broken character')
  const renamed = await client.patch(`/v1/process-templates/${copy.data.id}`, { name: copy.data.name })
  t.equal(renamed.statusCode, 200, 'the copy\'s name is one a PATCH takes')
})

t.test('a template PATCH that changes nothing keeps the version, the ETag and updatedAt', async (t) => {
  const tenant = await ctx.newTenant()
  const { client } = tenant
  const controller = await createUser(client)
  const autostart = { on: 'dateReached', record: 'property', field: 'handoverOn', daysOffset: 2, responsible: { user: controller } }
  const id = await createTemplate(client, { name: 'Handover', controllerUserId: controller, notifyOnCompletion: true, autostart })
  const serviceId = await valuationService(ctx.db, tenant.id)
  await client.post(`/v1/process-templates/${id}/steps`, { kind: 'webhook', name: 'Value it', serviceId, parameters: { mode: 'full' } })
  t.equal((await client.patch(`/v1/process-templates/${id}`, { active: true })).statusCode, 200)
  const before = (await client.get(`/v1/process-templates/${id}`)).data
  const url = `/v1/process-templates/${id}`
  const checkedThrough = () => ctx.db.selectFrom('process_templates').select('dates_checked_through').where('id', '=', id).executeTakeFirstOrThrow()
  const checked = await checkedThrough()
  ctx.clock.advance(3 * 24 * 60 * 60 * 1000)
  const etag = `"${before.version}"`
  for (const body of [
    { name: 'Handover' }, { active: true }, { controllerUserId: controller, notifyOnCompletion: true, description: '' },
    { autostart: { responsible: { user: controller }, daysOffset: 2, field: 'handoverOn', record: 'property', on: 'dateReached' } }
  ]) {
    const same = await client.patch(url, body, { 'if-match': etag })
    t.equal(same.statusCode, 200, JSON.stringify(body))
    t.same(same.data, before, `${JSON.stringify(body)}: the template as it was, updatedAt too`)
    t.equal(same.headers.etag, etag)
  }
  t.same(await checkedThrough(), checked, 'a dateReached autostart does not start watching anew')
  assertProblem(t, await client.patch(url, { name: 'Handover' }, { 'if-match': '"1"' }), 412, new RegExp(`version ${before.version}`))

  await ctx.db.updateTable('marketplace_services').set({ active: false }).where('id', '=', serviceId).execute()
  assertProblem(t, await client.patch(url, { active: true }), 422, /not an active marketplace service/) // activating still checks the steps
  t.same((await client.get(url)).data, before, 'stored unchanged')

  const changed = await client.patch(url, { autostart: { ...autostart, daysOffset: 3 } }, { 'if-match': etag })
  t.same([changed.data.version, changed.headers.etag], [before.version + 1, `"${before.version + 1}"`], 'a change still moves the version')
  t.not(changed.data.updatedAt, before.updatedAt)
})

t.test('a template\'s name of whitespace only answers 422 at /body/name, on create, update and copy', async (t) => {
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client)
  const before = (await client.get(`/v1/process-templates/${id}`)).data
  for (const name of [' ', '\t\n', '\u00a0\u3000']) {
    for (const response of [
      await client.post('/v1/process-templates', { name }),
      await client.patch(`/v1/process-templates/${id}`, { name }),
      await client.post(`/v1/process-templates/${id}/copy`, { name })
    ]) {
      assertProblem(t, response, 422, /may not be blank/)
      t.same(response.data.errors, [{ pointer: '/body/name', detail: 'must not be blank (whitespace only)' }], JSON.stringify(name))
    }
  }
  t.same((await client.get(`/v1/process-templates/${id}`)).data, before, 'unchanged')
  t.equal((await client.get('/v1/process-templates')).data.items.length, 1, 'no template was made')
})
