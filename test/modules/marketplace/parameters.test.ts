import t from 'tap'
import { sql } from '../../../src/db/kysely.js'
import type { DB } from '../../../src/db/connect.js'
import { setupApp } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { holdRow } from '../../helpers/database.js'
import { createService, insertTemplateWithStep } from './fixtures/catalogue.js'

// One app and database for the file: each test works in tenants of its own.
const ctx = await setupApp(t)

const UNKNOWN = '00000000-0000-4000-8000-000000000000'

t.test('parameter definitions: create, read, list, update, delete', async (t) => {
  const { operator } = ctx
  const service = await createService(operator)
  const base = `/v1/marketplace-services/${service.id}/parameters`

  const mode = await operator.post(base, { name: 'mode', label: 'Mode', type: 'enum', allowedValues: ['fast', 'exact'], required: true, default: 'fast' })
  t.equal(mode.statusCode, 201)
  t.same(mode.data, {
    id: mode.data.id, serviceId: service.id, name: 'mode', label: 'Mode', type: 'enum',
    allowedValues: ['fast', 'exact'], required: true, default: 'fast'
  })
  const plain = await operator.post(base, { name: 'note', type: 'string' })
  t.match(plain.data, { label: 'note', allowedValues: null, required: false, default: null }, 'defaults')
  t.match((await operator.post(base, { name: 'rooms', type: 'integer', default: 3 })).data, { default: 3 })
  t.match((await operator.post(base, { name: 'ratio', type: 'number', default: 0.5 })).data, { default: 0.5 })
  t.match((await operator.post(base, { name: 'notify_owner', type: 'boolean', default: false })).data, { default: false })

  const list = await operator.get(base)
  t.same(list.data.items.map((p: { name: string }) => p.name), ['mode', 'note', 'rooms', 'ratio', 'notify_owner'])
  const page = await operator.get(`${base}?limit=2`)
  t.equal(page.data.items.length, 2)
  t.equal((await operator.get(`${base}?limit=2&cursor=${page.data.nextCursor}`)).data.items[0].name, 'rooms')
  t.equal((await operator.get(`${base}/${mode.data.id}`)).data.label, 'Mode')

  const updated = await operator.patch(`${base}/${mode.data.id}`, { label: 'Precision', allowedValues: ['fast', 'exact', 'full'], default: null })
  t.match(updated.data, { name: 'mode', label: 'Precision', allowedValues: ['fast', 'exact', 'full'], default: null })
  const retyped = await operator.patch(`${base}/${mode.data.id}`, { type: 'string', default: 'fast' })
  t.match(retyped.data, { type: 'string', allowedValues: null, default: 'fast' }, 'leaving enum drops the allowed values')

  t.equal((await operator.delete(`${base}/${plain.data.id}`)).statusCode, 204)
  assertProblem(t, await operator.get(`${base}/${plain.data.id}`), 404)
  assertProblem(t, await operator.delete(`${base}/${plain.data.id}`), 404)
  assertProblem(t, await operator.get(`/v1/marketplace-services/${UNKNOWN}/parameters`), 404)
  assertProblem(t, await operator.post(`/v1/marketplace-services/${UNKNOWN}/parameters`, { name: 'x', type: 'string' }), 404)

  const other = await createService(operator, { name: 'Other' })
  assertProblem(t, await operator.get(`/v1/marketplace-services/${other.id}/parameters/${mode.data.id}`), 404, /Parameter/)
})

t.test('parameter schema failures answer 400', async (t) => {
  const { operator } = ctx
  const service = await createService(operator)
  const base = `/v1/marketplace-services/${service.id}/parameters`
  assertProblem(t, await operator.post(base, { name: 'x' }), 400, /type/)
  assertProblem(t, await operator.post(base, { name: 'x', type: 'date' }), 400, /\/body\/type/)
  assertProblem(t, await operator.post(base, { name: 'x', type: 'string', required: 'yes' }), 400, /\/body\/required/)
  assertProblem(t, await operator.post(base, { name: 'x', type: 'string', default: { a: 1 } }), 400, /\/body\/default/)
  assertProblem(t, await operator.post(base, { name: 'x', type: 'string', color: 'red' }), 400, /color/)
  assertProblem(t, await operator.get(`${base}/not-a-uuid`), 400)
  const created = await operator.post(base, { name: 'x', type: 'string' })
  assertProblem(t, await operator.patch(`${base}/${created.data.id}`, {}), 400)
})

t.test('parameter rules answer 422 with field errors', async (t) => {
  const { operator } = ctx
  const service = await createService(operator)
  const base = `/v1/marketplace-services/${service.id}/parameters`
  const cases: [string, Record<string, unknown>, string][] = [
    ['name starts with a digit', { name: '1st', type: 'string' }, '/body/name'],
    ['name with a dash', { name: 'has-dash', type: 'string' }, '/body/name'],
    ['empty name', { name: '', type: 'string' }, '/body/name'],
    ['context parameter', { name: 'estateId', type: 'string' }, '/body/name'],
    ['context parameter in another case', { name: 'SIGNATURE', type: 'string' }, '/body/name'],
    ['enum without values', { name: 'm', type: 'enum' }, '/body/allowedValues'],
    ['enum with no values', { name: 'm', type: 'enum', allowedValues: [] }, '/body/allowedValues'],
    ['enum with repeated values', { name: 'm', type: 'enum', allowedValues: ['a', 'a'] }, '/body/allowedValues'],
    ['values on a string', { name: 'm', type: 'string', allowedValues: ['a'] }, '/body/allowedValues'],
    ['fractional integer default', { name: 'm', type: 'integer', default: 1.5 }, '/body/default'],
    ['text integer default', { name: 'm', type: 'integer', default: '5' }, '/body/default'],
    ['text number default', { name: 'm', type: 'number', default: '0.5' }, '/body/default'],
    ['text boolean default', { name: 'm', type: 'boolean', default: 'true' }, '/body/default'],
    ['numeric string default', { name: 'm', type: 'string', default: 5 }, '/body/default'],
    ['enum default outside the values', { name: 'm', type: 'enum', allowedValues: ['a'], default: 'b' }, '/body/default']
  ]
  for (const [label, body, pointer] of cases) {
    const response = await operator.post(base, body)
    assertProblem(t, response, 422)
    t.match(response.data.errors, [{ pointer }], label)
  }
  const created = await operator.post(base, { name: 'level', type: 'integer' })
  const patched = await operator.patch(`${base}/${created.data.id}`, { default: 'high' })
  assertProblem(t, patched, 422)
  t.match(patched.data.errors, [{ pointer: '/body/default' }])
  t.equal((await operator.get(base)).data.items.length, 1, 'nothing else was saved')
})

t.test('parameter names are unique per service, ignoring case', async (t) => {
  const { operator } = ctx
  const service = await createService(operator)
  const other = await createService(operator, { name: 'Other' })
  const base = `/v1/marketplace-services/${service.id}/parameters`
  await operator.post(base, { name: 'mode', type: 'string' })
  const second = await operator.post(base, { name: 'level', type: 'string' })

  assertProblem(t, await operator.post(base, { name: 'mode', type: 'integer' }), 409, /mode/)
  assertProblem(t, await operator.post(base, { name: 'MODE', type: 'string' }), 409, /mode/)
  assertProblem(t, await operator.patch(`${base}/${second.data.id}`, { name: 'Mode' }), 409)
  t.equal((await operator.patch(`${base}/${second.data.id}`, { name: 'Level' })).data.name, 'Level', 'a case change of its own name')
  t.equal((await operator.post(`/v1/marketplace-services/${other.id}/parameters`, { name: 'mode', type: 'string' })).statusCode, 201)
})

t.test('parameters that template steps pass are protected', async (t) => {
  const { operator, db, newTenant } = ctx
  const tenant = await newTenant()
  const service = await createService(operator)
  const base = `/v1/marketplace-services/${service.id}/parameters`
  const mode = await operator.post(base, { name: 'mode', type: 'enum', allowedValues: ['fast', 'exact'] })
  const spare = await operator.post(base, { name: 'spare', type: 'string' })
  const { templateId } = await insertTemplateWithStep(db, {
    tenantId: tenant.id, serviceId: service.id, templateName: 'Quarterly valuation', parameters: { mode: 'fast' }
  })
  const url = `${base}/${mode.data.id}`

  const refused = await operator.delete(url)
  assertProblem(t, refused, 409, /Quarterly valuation/)
  t.match(refused.data.detail, templateId)
  assertProblem(t, await operator.patch(url, { name: 'speed' }), 409, /renaming/)
  assertProblem(t, await operator.patch(url, { type: 'string' }), 409, /type/)
  assertProblem(t, await operator.patch(url, { allowedValues: ['fast'] }), 409, /"exact"/)
  t.equal((await operator.patch(url, { label: 'Speed', allowedValues: ['fast', 'exact', 'full'] })).statusCode, 200, 'harmless changes pass')
  t.equal((await operator.delete(`${base}/${spare.data.id}`)).statusCode, 204, 'a parameter no step passes can go')

  await db.deleteFrom('process_templates').where('id', '=', templateId).execute()
  t.equal((await operator.delete(url)).statusCode, 204)
})

t.test('a parameter that steps of the service do not pass cannot become required without a default', async (t) => {
  const { operator, db, newTenant } = ctx
  const tenant = await newTenant()
  const service = await createService(operator)
  const base = `/v1/marketplace-services/${service.id}/parameters`
  const mode = await operator.post(base, { name: 'mode', type: 'string' })
  const { templateId } = await insertTemplateWithStep(db, {
    tenantId: tenant.id, serviceId: service.id, templateName: 'Monthly valuation', parameters: { mode: 'fast' }
  })
  const refused = await operator.post(base, { name: 'region', type: 'string', required: true })
  assertProblem(t, refused, 409, /"region".*required.*Monthly valuation/)
  t.match(refused.data.detail, templateId)
  t.equal((await operator.post(base, { name: 'region', type: 'string', required: true, default: 'north' })).statusCode, 201, 'with a default, it may be required')
  const optional = await operator.post(base, { name: 'area', type: 'string' })
  t.equal(optional.statusCode, 201, 'optional, it may be added')
  assertProblem(t, await operator.patch(`${base}/${optional.data.id}`, { required: true }), 409, /"area".*required/)
  t.equal((await operator.patch(`${base}/${mode.data.id}`, { required: true })).statusCode, 200, 'a parameter every step passes may become required')

  await db.deleteFrom('process_templates').where('id', '=', templateId).execute()
  t.equal((await operator.patch(`${base}/${optional.data.id}`, { required: true })).statusCode, 200, 'once no step calls the service')
})

t.test('a step saved while a parameter it passes is being deleted either keeps the parameter (409) or is refused (422)', async (t) => {
  const { operator, db, newTenant } = ctx
  const tenant = await newTenant()
  const service = await createService(operator)
  const base = `/v1/marketplace-services/${service.id}/parameters`
  const mode = await operator.post(base, { name: 'mode', type: 'string' })
  t.equal((await tenant.client.put(`/v1/marketplace-services/${service.id}/activation`)).statusCode, 200)
  const template = await tenant.client.post('/v1/process-templates', { name: 'Valuation' })

  // Another transaction holds the parameter's row: the deletion waits after its check of the steps, as it may for a moment.
  const held = await holdRow(db, sql`select id from service_parameters where id = ${mode.data.id} for update`)
  const deleting = operator.delete(`${base}/${mode.data.id}`)
  t.ok(await sessionsWaitForLocks(db, 1), 'the deletion waits')
  const saving = tenant.client.post(`/v1/process-templates/${template.data.id}/steps`, { kind: 'webhook', name: 'Value it', serviceId: service.id, parameters: { mode: 'full' } })
  await Promise.race([saving, sessionsWaitForLocks(db, 2)])
  await held.release()
  const [deleted, saved] = await Promise.all([deleting, saving])
  t.not(deleted.statusCode === 204 && saved.statusCode === 201, true,
    `not both: the parameter deleted (${deleted.statusCode}) and a step passing it saved (${saved.statusCode} ${saved.body})`)
  if (deleted.statusCode === 204) assertProblem(t, saved, 422, /mode/)
  else assertProblem(t, deleted, 409, /Valuation/)
})

/** Whether at least `count` sessions on this test's database come to wait for a lock within a few seconds. */
async function sessionsWaitForLocks(db: DB, count: number): Promise<boolean> {
  for (let i = 0; i < 100; i += 1) {
    const { rows } = await sql<{ waiting: number }>`
      select count(*)::int as waiting from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`.execute(db)
    if ((rows[0]?.waiting ?? 0) >= count) return true
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return false
}

t.test('tenants read parameters of services they can see, and write none', async (t) => {
  const { operator, newTenant } = ctx
  const { client } = await newTenant()
  const service = await createService(operator)
  const hidden = await createService(operator, { active: false })
  const base = `/v1/marketplace-services/${service.id}/parameters`
  const mode = await operator.post(base, { name: 'mode', type: 'string' })
  await operator.post(`/v1/marketplace-services/${hidden.id}/parameters`, { name: 'mode', type: 'string' })

  t.equal((await client.get(base)).data.items.length, 1)
  t.equal((await client.get(`${base}/${mode.data.id}`)).data.name, 'mode')
  assertProblem(t, await client.get(`/v1/marketplace-services/${hidden.id}/parameters`), 404)
  assertProblem(t, await client.post(base, { name: 'x', type: 'string' }), 403)
  assertProblem(t, await client.patch(`${base}/${mode.data.id}`, { label: 'X' }), 403)
  assertProblem(t, await client.delete(`${base}/${mode.data.id}`), 403)
})

t.test('a parameter PATCH that changes nothing keeps its stored updated_at', async (t) => {
  const { operator, db, clock } = ctx
  const service = await createService(operator)
  const created = (await operator.post(`/v1/marketplace-services/${service.id}/parameters`, {
    name: 'mode', label: 'Mode', type: 'enum', allowedValues: ['fast', 'exact'], required: true, default: 'fast'
  })).data
  const url = `/v1/marketplace-services/${service.id}/parameters/${created.id}`
  const updatedAt = async () => (await db.selectFrom('service_parameters').select('updated_at').where('id', '=', created.id).executeTakeFirstOrThrow()).updated_at
  const before = await updatedAt()
  clock.advance(60_000)
  for (const body of [{ label: 'Mode' }, { type: 'enum', allowedValues: ['fast', 'exact'], required: true, default: 'fast', name: 'mode' }]) {
    const same = await operator.patch(url, body)
    t.equal(same.statusCode, 200, JSON.stringify(body))
    t.same(same.data, created, JSON.stringify(body))
  }
  t.same(await updatedAt(), before, 'stored unchanged')
  t.equal((await operator.patch(url, { label: 'Modus' })).statusCode, 200)
  t.same(await updatedAt(), clock.now(), 'a change still moves updated_at')
})

t.test('a parameter\'s label of whitespace only answers 422 at /body/label, on create and update', async (t) => {
  const { operator } = ctx
  const service = await createService(operator)
  const base = `/v1/marketplace-services/${service.id}/parameters`
  const created = await operator.post(base, { name: 'mode', label: 'Mode', type: 'string' })
  for (const label of [' ', '\t\n', '\u00a0\u3000']) {
    for (const response of [
      await operator.post(base, { name: 'other', label, type: 'string' }),
      await operator.patch(`${base}/${created.data.id}`, { label })
    ]) {
      assertProblem(t, response, 422, /may not be blank/)
      t.same(response.data.errors, [{ pointer: '/body/label', detail: 'must not be blank (whitespace only)' }], JSON.stringify(label))
    }
  }
  t.same((await operator.get(base)).data.items.map((p: { label: string }) => p.label), ['Mode'], 'unchanged, nothing added')
})

t.test('a service takes at most 100 parameters, as a step passes at most 100: every call carries those with a default', async (t) => {
  const { operator } = ctx
  const service = await createService(operator)
  const base = `/v1/marketplace-services/${service.id}/parameters`
  // Written directly: a hundred requests would cost the suite time for nothing.
  await sql`insert into service_parameters (service_id, id, name, label, type, required, created_at, updated_at)
    select ${service.id}, gen_random_uuid(), 'p' || n, 'p' || n, 'string', false, now(), now() from generate_series(1, 99) n`.execute(ctx.db)
  t.equal((await operator.post(base, { name: 'last', type: 'string', default: 'x' })).statusCode, 201, 'the hundredth')
  assertProblem(t, await operator.post(base, { name: 'more', type: 'string', default: 'x' }), 409, /has 100 parameters, as many as a service may have; delete one first/)
  t.equal((await operator.get(`${base}?limit=200`)).data.items.length, 100, 'nothing added')
})
