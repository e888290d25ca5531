import t from 'tap'
import type { DB } from '../../../src/db/connect.js'
import { newId } from '../../../src/lib/ids.js'
import { insertActivity } from '../../../src/modules/activities/repository.js'
import { addressKind } from '../../../src/modules/addresses/routes.js'
import { propertyKind } from '../../../src/modules/properties/routes.js'
import { LINK_COLUMN } from '../../../src/modules/records/repository.js'
import { setupApp } from '../../helpers/app.js'
import { assertIsolated, assertProblem } from '../../helpers/assertions.js'

// One app and database for the file: each test works in tenants of its own.
const ctx = await setupApp(t)

async function insertInstance(db: DB, tenantId: string, userId: string, link: 'property_id' | 'address_id', recordId: string): Promise<string> {
  const templateId = newId()
  await db.insertInto('process_templates').values({
    tenant_id: tenantId, id: templateId, name: 'Valuation', description: '', active: true, notify_on_completion: false
  }).execute()
  const id = newId()
  await db.insertInto('process_instances').values({
    tenant_id: tenantId, id, template_id: templateId, template_name: 'Valuation',
    responsible_user_id: userId, controller_user_id: userId, [link]: recordId
  }).execute()
  return id
}

for (const kind of [propertyKind, addressKind]) {
  const collection = `/v1/${kind.path}`
  const link = LINK_COLUMN[kind.table]

  t.test(`${kind.path}: a record a process instance links cannot be deleted`, async (t) => {
    const tenant = await ctx.newTenant()
    const user = (await tenant.client.post('/v1/users', { name: 'Anna', email: 'anna@example.com' })).data
    const record = (await tenant.client.post(collection, {})).data
    const first = await insertInstance(ctx.db, tenant.id, user.id, link, record.id)
    const second = await insertInstance(ctx.db, tenant.id, user.id, link, record.id)

    const refused = await tenant.client.delete(`${collection}/${record.id}`)
    assertProblem(t, refused, 409, new RegExp(`${first}.*${second}`))
    t.equal((await tenant.client.get(`${collection}/${record.id}`)).statusCode, 200, 'still there')

    // Ended, they still hold it: the answer says so, and that the retention is what lets it go.
    await ctx.db.updateTable('process_instances').set({ status: 'cancelled', ended_at: new Date() }).where('tenant_id', '=', tenant.id).execute()
    const ended = await tenant.client.delete(`${collection}/${record.id}`)
    assertProblem(t, ended, 409, new RegExp(`${first}.*${second}`))
    t.match(ended.data.detail, /once it has ended, until the retention removes it \(BATON_RETENTION_DAYS after it ended; never when that is 0\)/)
    t.notMatch(ended.data.detail, /Cancel/, 'cancelling them again is no advice')

    await ctx.db.deleteFrom('process_instances').where('tenant_id', '=', tenant.id).execute()
    t.equal((await tenant.client.delete(`${collection}/${record.id}`)).statusCode, 204)
  })

  t.test(`${kind.path}: the activity log, newest first`, async (t) => {
    const tenant = await ctx.newTenant()
    const record = (await tenant.client.post(collection, {})).data
    const other = (await tenant.client.post(collection, {})).data
    const log = (recordId: string, message: string, at: number) => insertActivity(ctx.db, {
      tenant_id: tenant.id, id: newId(at), kind: 'note', message, [link]: recordId, data: { step: message }
    })
    const start = Date.now()
    await log(record.id, 'first', start)
    await log(other.id, 'elsewhere', start + 1)
    await log(record.id, 'second', start + 2)
    await log(record.id, 'third', start + 3)

    const url = `${collection}/${record.id}/activities`
    const all = await tenant.client.get(url)
    t.equal(all.statusCode, 200)
    t.same(all.data.items.map((a: { message: string }) => a.message), ['third', 'second', 'first'])
    t.match(all.data.items[0], {
      id: String, kind: 'note', [link === 'property_id' ? 'propertyId' : 'addressId']: record.id,
      instanceId: null, stepId: null, serviceId: null, data: { step: 'third' }, createdAt: String
    })

    const page = await tenant.client.get(`${url}?limit=2`)
    t.same(page.data.items.map((a: { message: string }) => a.message), ['third', 'second'])
    const rest = await tenant.client.get(`${url}?limit=2&cursor=${page.data.nextCursor}`)
    t.same([rest.data.items.map((a: { message: string }) => a.message), rest.data.nextCursor], [['first'], null])

    assertProblem(t, await tenant.client.get(`${collection}/${newId()}/activities`), 404)
    assertProblem(t, await tenant.client.get(`${collection}/${record.id}/activities?cursor=x`), 400)
  })

  t.test(`${kind.path}: records are invisible to other tenants`, async (t) => {
    const a = await ctx.newTenant()
    const b = await ctx.newTenant()
    const record = (await a.client.post(collection, { fields: { owner: 'A' } })).data
    await b.client.post(collection, { fields: { owner: 'B' } })
    await insertActivity(ctx.db, { tenant_id: a.id, id: newId(), kind: 'note', message: 'secret', [link]: record.id })

    await assertIsolated(t, b.client, { collection, id: record.id, update: { fields: { owner: 'B' } } })
    assertProblem(t, await b.client.get(`${collection}/${record.id}/activities`), 404)
    t.same((await a.client.get(`${collection}/${record.id}`)).data, record, 'unchanged')
    t.equal((await a.client.get(`${collection}/${record.id}/activities`)).data.items.length, 1)
  })
}
