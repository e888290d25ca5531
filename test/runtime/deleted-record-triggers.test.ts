import t from 'tap'
import { setupRuntime } from '../helpers/runtime.js'

// A trigger's call names its record: once the record is deleted, no call may name it again.
const rt = await setupRuntime(t)
await rt.operator.post(`/v1/marketplace-services/${rt.serviceId}/triggers`, { module: 'property', events: ['create', 'update'], fields: ['price'] })
await rt.operator.post(`/v1/marketplace-services/${rt.serviceId}/triggers`, { module: 'address', events: ['create'], fields: [] })

async function triggeredBy(field: 'propertyId' | 'addressId', id: string) {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON from the API
  return (await rt.api.get('/v1/deliveries?limit=200')).data.items.filter((d: any) => d[field] === id && d.source === 'trigger')
}

t.test('deleting a property cancels its trigger deliveries no worker has claimed', async (t) => {
  const made = await rt.api.post('/v1/properties', { fields: { price: 1 } })
  const id = made.data.id as string
  t.match(await triggeredBy('propertyId', id), [{ status: 'pending' }], 'the create fired the trigger')
  t.equal((await rt.api.delete(`/v1/properties/${id}`)).statusCode, 204)
  const [delivery] = await triggeredBy('propertyId', id)
  t.match(delivery, { status: 'cancelled', lastError: /property was deleted/, finishedAt: /Z$/ })
  const before = rt.provider.calls.length
  await rt.scheduler.runOnce()
  t.equal(rt.provider.calls.length, before, 'no call names the deleted property')
})

t.test('deleting an address cancels its trigger deliveries too', async (t) => {
  const id = (await rt.api.post('/v1/addresses', { fields: { name: 'Owner' } })).data.id as string
  t.equal((await rt.api.delete(`/v1/addresses/${id}`)).statusCode, 204)
  t.match(await triggeredBy('addressId', id), [{ status: 'cancelled', lastError: /address was deleted/ }])
  const before = rt.provider.calls.length
  await rt.scheduler.runOnce()
  t.equal(rt.provider.calls.length, before)
})

t.test('a call in flight when the record is deleted finishes, and is not tried again', async (t) => {
  const id = (await rt.api.post('/v1/properties', { fields: { price: 2 } })).data.id as string
  rt.provider.queue(async () => {
    const deleted = await rt.api.delete(`/v1/properties/${id}`)
    t.equal(deleted.statusCode, 204, 'the record can be deleted while its trigger is being called')
    return { status: 503, body: 'busy' }
  })
  const before = rt.provider.calls.length
  await rt.scheduler.runOnce()
  t.equal(rt.provider.calls.length, before + 1, 'the call in flight went out')
  t.match(await triggeredBy('propertyId', id), [{ status: 'pending', attemptCount: 1 }], 'its outcome (retry) was recorded')
  rt.clock.advance(60_000)
  await rt.scheduler.runOnce()
  t.equal(rt.provider.calls.length, before + 1, 'the retry does not call with the deleted id')
  const [delivery] = await triggeredBy('propertyId', id)
  t.match(delivery, { status: 'cancelled', attemptCount: 1, lastError: /^cancelled: the property was deleted before the call$/ })
  t.equal(delivery.attempts.length, 1, 'the attempt log holds the one call made')

  const replayed = await rt.api.post(`/v1/deliveries/${delivery.id}/replay`)
  t.equal(replayed.statusCode, 409, replayed.body)
  t.match(replayed.data.detail, new RegExp(`Property ${id} was deleted`), 'a replay says why at once, not by giving up later')
  const [after] = await triggeredBy('propertyId', id)
  t.equal(after.round, delivery.round, 'and queues nothing')

  const recovery = await rt.api.post(`/v1/marketplace-services/${rt.serviceId}/recover`, { since: '2000-01-01T00:00:00Z', dryRun: true })
  t.equal(recovery.statusCode, 200, recovery.body)
  t.notOk(recovery.data.deliveryIds.includes(delivery.id), 'a recovery after an outage leaves it out too')
})
