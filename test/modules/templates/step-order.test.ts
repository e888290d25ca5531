import t from 'tap'
import { setupApp, type Client } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { addTaskStep, createTemplate } from './fixtures.js'

// One app and database for the file: each test works in tenants of its own.
const ctx = await setupApp(t)

const MISSING = '00000000-0000-4000-8000-000000000000'

async function templateWithSteps(client: Client, count: number) {
  const id = await createTemplate(client)
  const ids: string[] = []
  for (let i = 1; i <= count; i++) ids.push(await addTaskStep(client, id, `Step ${i}`))
  return { id, ids, order: `/v1/process-templates/${id}/steps/order` }
}

const stepOrder = async (client: Client, id: string) =>
  (await client.get(`/v1/process-templates/${id}`)).data.steps.map((s: { id: string; position: number }) => [s.id, s.position])

t.test('reordering rewrites all positions and bumps the template version', async (t) => {
  const { client } = await ctx.newTenant()
  const { id, ids, order } = await templateWithSteps(client, 3)
  const version = (await client.get(`/v1/process-templates/${id}`)).data.version

  const reordered = await client.put(order, { stepIds: [ids[2], ids[0], ids[1]] }, { 'if-match': `"${version}"` })
  t.equal(reordered.statusCode, 200)
  t.equal(reordered.data.version, version + 1)
  t.equal(reordered.headers.etag, `"${version + 1}"`)
  t.same(reordered.data.steps.map((s: { name: string }) => s.name), ['Step 3', 'Step 1', 'Step 2'])
  t.same(reordered.data.steps.map((s: { position: number }) => s.position), [1, 2, 3])
  t.same((await client.get(`/v1/process-templates/${id}/steps`)).data.items.map((s: { id: string }) => s.id), [ids[2], ids[0], ids[1]])
  t.equal((await client.get(`/v1/process-templates/${id}/steps/${ids[2]}`)).data.position, 1)

  const empty = await createTemplate(client)
  t.equal((await client.put(`/v1/process-templates/${empty}/steps/order`, { stepIds: [] })).statusCode, 200, 'no steps, empty order')
  assertProblem(t, await client.put(`/v1/process-templates/${MISSING}/steps/order`, { stepIds: [] }), 404)
})

t.test('a wrong set of step ids answers 422 and changes nothing', async (t) => {
  const { client } = await ctx.newTenant()
  const { id, ids, order } = await templateWithSteps(client, 3)
  const other = await templateWithSteps(client, 1)
  const before = await stepOrder(client, id)
  const version = (await client.get(`/v1/process-templates/${id}`)).data.version

  assertProblem(t, await client.put(order, { stepIds: [ids[1], ids[0]] }), 422, /\/body\/stepIds.*misses step/)
  assertProblem(t, await client.put(order, { stepIds: [ids[0], ids[0], ids[1], ids[2]] }), 422, /\/body\/stepIds\/1.*more than once/)
  assertProblem(t, await client.put(order, { stepIds: [ids[2], ids[1], ids[0], other.ids[0]] }), 422, /\/body\/stepIds\/3.*not a step of this template/)
  assertProblem(t, await client.put(order, { stepIds: [ids[2], ids[1], MISSING] }), 422, /not a step of this template.*misses step/)

  t.same(await stepOrder(client, id), before, 'positions unchanged')
  t.equal((await client.get(`/v1/process-templates/${id}`)).data.version, version, 'version unchanged')
})

t.test('a stale If-Match on a reorder answers 412', async (t) => {
  const { client } = await ctx.newTenant()
  const { id, ids, order } = await templateWithSteps(client, 2)
  const before = await stepOrder(client, id)
  assertProblem(t, await client.put(order, { stepIds: [ids[1], ids[0]] }, { 'if-match': '"1"' }), 412)
  t.same(await stepOrder(client, id), before)
})

t.test('concurrent reorders and inserts leave positions 1..n without gaps or duplicates', async (t) => {
  const { client } = await ctx.newTenant()
  const { id, ids, order } = await templateWithSteps(client, 5)
  const forward = [...ids]
  const backward = [...ids].reverse()

  const results = await Promise.all([
    client.put(order, { stepIds: forward }),
    client.put(order, { stepIds: backward }),
    client.put(order, { stepIds: forward }),
    client.put(order, { stepIds: backward })
  ])
  t.same(results.map((r) => r.statusCode), [200, 200, 200, 200])
  const final = (await client.get(`/v1/process-templates/${id}`)).data
  t.same(final.steps.map((s: { position: number }) => s.position), [1, 2, 3, 4, 5])
  t.ok([forward, backward].some((o) => JSON.stringify(o) === JSON.stringify(final.steps.map((s: { id: string }) => s.id))), 'one of the orders won whole')
  // The lock runs them one after another; one that finds its order already there changes nothing.
  const bumps = new Set(results.map((r) => r.data.version as number).filter((v) => v > 6)).size
  t.ok(bumps >= 1, 'the order changed at least once')
  t.equal(final.version, 6 + bumps, 'every reorder that changed the order bumped the version once')

  const inserts = await Promise.all([1, 2, 3].map((i) =>
    client.post(`/v1/process-templates/${id}/steps`, { kind: 'task', name: `Inserted ${i}`, position: 1 })))
  t.same(inserts.map((r) => r.statusCode), [201, 201, 201])
  const rows = await ctx.db.selectFrom('template_steps').select('position').where('template_id', '=', id).orderBy('position').execute()
  t.same(rows.map((r) => r.position), [1, 2, 3, 4, 5, 6, 7, 8])
})

t.test('a reorder to the order the steps have keeps the template version, the ETag and updatedAt', async (t) => {
  const { client } = await ctx.newTenant()
  const { id, ids, order } = await templateWithSteps(client, 3)
  const before = (await client.get(`/v1/process-templates/${id}`)).data
  ctx.clock.advance(1000)
  const same = await client.put(order, { stepIds: ids }, { 'if-match': `"${before.version}"` })
  t.equal(same.statusCode, 200)
  t.same(same.data, before, 'the template as it was, its steps too')
  t.equal(same.headers.etag, `"${before.version}"`)
  assertProblem(t, await client.put(order, { stepIds: ids }, { 'if-match': '"1"' }), 412)
  assertProblem(t, await client.put(order, { stepIds: [ids[0], ids[1]] }), 422) // the ids are still checked
  const moved = await client.put(order, { stepIds: [ids[1], ids[0], ids[2]] }, { 'if-match': `"${before.version}"` })
  t.equal(moved.data.version, before.version + 1, 'a new order still moves the version')
})
