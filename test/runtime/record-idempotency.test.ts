import { randomUUID } from 'node:crypto'
import t from 'tap'
import { requestDigest } from '../../src/modules/records/service.js'
import { assertProblem } from '../helpers/assertions.js'
import { waitForLockWait } from '../helpers/database.js'
import { setupRuntime } from '../helpers/runtime.js'

// A create of a property or address with an Idempotency-Key (as a start's): a retry answers with the
// record the first one made, as it is now, and fires its triggers and autostarts once; the same key
// with another request is refused; racing retries make one record.
const rt = await setupRuntime(t)
const api = rt.api
await rt.operator.post(`/v1/marketplace-services/${rt.serviceId}/triggers`, { module: 'property', events: ['create'], fields: [] })
const welcome = await api.post('/v1/process-templates', {
  name: 'Welcome the property', controllerUserId: rt.controller.id, autostart: { on: 'recordCreated', record: 'property', responsible: { user: rt.worker.id } }
})
await api.post(`/v1/process-templates/${welcome.data.id}/steps`, { kind: 'task', name: 'Take photos', refersTo: { property: true } })
await api.patch(`/v1/process-templates/${welcome.data.id}`, { active: true })

const keyed = () => ({ 'idempotency-key': `create-${randomUUID()}` })
/** What the create fired for the property: its trigger's deliveries and its autostarted processes. */
const firedFor = async (propertyId: string) => {
  const deliveries = (await api.get('/v1/deliveries?limit=200')).data.items.filter((d: { propertyId: string; source: string }) => d.propertyId === propertyId && d.source === 'trigger')
  const processes = (await api.get(`/v1/process-instances?propertyId=${propertyId}`)).data.items
  return { deliveries: deliveries.length, processes: processes.length }
}
const countWith = async (path: string, city: string) =>
  (await api.get(`${path}?fields=${encodeURIComponent(JSON.stringify({ city }))}&limit=200`)).data.items.length

t.test('a retried create answers 200 with the first record and fires nothing again', async (t) => {
  const key = keyed()
  const city = `Bremen-${randomUUID()}`
  const first = await api.post('/v1/properties', { maintainerUserId: rt.worker.id, fields: { city, price: 1, geo: { lat: 53, lon: 8.8 } } }, key)
  t.equal(first.statusCode, 201, first.body)
  t.notOk(first.headers['idempotent-replayed'])
  // The same request, its keys in another order.
  const retry = await api.post('/v1/properties', { fields: { geo: { lon: 8.8, lat: 53 }, price: 1, city }, maintainerUserId: rt.worker.id }, key)
  t.equal(retry.statusCode, 200, retry.body)
  t.equal(retry.headers['idempotent-replayed'], 'true')
  t.equal(retry.headers.location, first.headers.location)
  t.equal(retry.headers.etag, '"1"')
  t.same(retry.data, first.data)
  t.equal(await countWith('/v1/properties', city), 1, 'one property')
  t.same(await firedFor(first.data.id), { deliveries: 1, processes: 1 }, 'its trigger and its autostart fired once')

  const patched = await api.patch(`/v1/properties/${first.data.id}`, { fields: { price: 2 } })
  t.equal(patched.statusCode, 200)
  const later = await api.post('/v1/properties', { maintainerUserId: rt.worker.id, fields: { city, price: 1, geo: { lat: 53, lon: 8.8 } } }, key)
  t.equal(later.statusCode, 200)
  t.match(later.data, { id: first.data.id, version: 2, fields: { price: 2 } }, 'the record as it is now')
  t.equal(later.headers.etag, '"2"')
})

t.test('the same key with another request is refused, and changes nothing', async (t) => {
  const key = keyed()
  const city = `Kiel-${randomUUID()}`
  const first = await api.post('/v1/addresses', { fields: { city, name: 'Ida' } }, key)
  t.equal(first.statusCode, 201, first.body)
  assertProblem(t, await api.post('/v1/addresses', { fields: { city, name: 'Ida', phone: '0431' } }, key), 422, /Idempotency-Key was used for a different create \(address /)
  assertProblem(t, await api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { city, name: 'Ida' } }, key), 422, /different create/)
  t.equal(await countWith('/v1/addresses', city), 1)
  t.same((await api.get(`/v1/addresses/${first.data.id}`)).data, first.data)

  // A key is the tenant's and the kind's own.
  const property = await api.post('/v1/properties', { fields: { city } }, key)
  t.equal(property.statusCode, 201, 'a property with an address\'s key')
  const stranger = await rt.newTenant({ name: 'Andere Immobilien' })
  const theirs = await stranger.client.post('/v1/addresses', { fields: { city, name: 'Ida' } }, key)
  t.equal(theirs.statusCode, 201, 'another tenant with the same key')
  t.not(theirs.data.id, first.data.id)
})

t.test('racing creates with one key make one record and fire once', async (t) => {
  const key = keyed()
  const city = `Lübeck-${randomUUID()}`
  const raced = await Promise.all(Array.from({ length: 4 }, () => api.post('/v1/properties', { fields: { city } }, key)))
  t.same(raced.map((r) => r.statusCode).sort(), [200, 200, 200, 201], raced.map((r) => r.body).join('\n'))
  t.equal(new Set(raced.map((r) => r.data.id)).size, 1, 'every answer names the same property')
  t.equal(await countWith('/v1/properties', city), 1)
  t.same(await firedFor(raced[0]!.data.id), { deliveries: 1, processes: 1 })
})

t.test('a create that meets an uncommitted one with its key waits: replays it once committed, creates once it rolled back', async (t) => {
  class Undone extends Error {}
  /** The API's create of `body` while a transaction holds an uncommitted property with the key, made for `asked`, then commits or rolls back. */
  const meetHeld = async (body: { fields: Record<string, unknown> }, asked: { fields: Record<string, unknown> }, end: 'commit' | 'rollback') => {
    const key = keyed()['idempotency-key']
    let finish: () => void = () => {}
    const finishing = new Promise<void>((resolve) => (finish = resolve))
    let inserted: (id: string) => void = () => {}
    const isInserted = new Promise<string>((resolve) => (inserted = resolve))
    const holder = rt.db.transaction().execute(async (trx) => {
      const row = await trx.insertInto('properties').values({
        tenant_id: rt.tenant.id, id: randomUUID(), maintainer_user_id: null, fields: JSON.stringify(asked.fields), updated_at: new Date(),
        idempotency_key: key, idempotency_digest: requestDigest(asked)
      }).returning('id').executeTakeFirstOrThrow()
      inserted(row.id)
      await finishing
      if (end === 'rollback') throw new Undone()
    }).catch((error: unknown) => { if (!(error instanceof Undone)) throw error })
    const heldId = await isInserted
    const answer = api.post('/v1/properties', body, { 'idempotency-key': key })
    await waitForLockWait(rt.db)
    finish()
    await holder
    return { answer: await answer, heldId }
  }
  const body = { fields: { city: `Wismar-${randomUUID()}` } }
  const committed = await meetHeld(body, body, 'commit')
  t.equal(committed.answer.statusCode, 200, committed.answer.body)
  t.equal(committed.answer.headers['idempotent-replayed'], 'true')
  t.equal(committed.answer.data.id, committed.heldId)
  t.same(await firedFor(committed.heldId), { deliveries: 0, processes: 0 }, 'the replay fired nothing')

  const undone = await meetHeld(body, body, 'rollback')
  t.equal(undone.answer.statusCode, 201, undone.answer.body)
  t.not(undone.answer.data.id, undone.heldId)
  t.same(await firedFor(undone.answer.data.id), { deliveries: 1, processes: 1 }, 'the create fired')

  const other = await meetHeld(body, { fields: { city: 'elsewhere' } }, 'commit')
  assertProblem(t, other.answer, 422, /different create/)
})

t.test('creates without a key are each their own; a bad key is a 400', async (t) => {
  const city = `Rostock-${randomUUID()}`
  t.equal((await api.post('/v1/properties', { fields: { city } })).statusCode, 201)
  t.equal((await api.post('/v1/properties', { fields: { city } })).statusCode, 201)
  t.equal(await countWith('/v1/properties', city), 2)
  for (const bad of ['x'.repeat(201), 'with space', 'ünïcödé']) {
    assertProblem(t, await api.post('/v1/properties', { fields: { city } }, { 'idempotency-key': bad }), 400, /idempotency-key/i)
  }
  t.equal(await countWith('/v1/properties', city), 2)
})
