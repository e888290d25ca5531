import t from 'tap'
import { queueTriggeredDeliveries } from '../../src/modules/records/trigger-repository.js'
import { setupRuntime } from '../helpers/runtime.js'

// A trigger says which changes its provider wants called: once none of the service's triggers
// matches a change any more, its call is not made and the delivery ends `cancelled`, saying why.
// Each test watches fields of its own.
const rt = await setupRuntime(t)

async function addTrigger(body: Record<string, unknown>): Promise<string> {
  const made = await rt.operator.post(`/v1/marketplace-services/${rt.serviceId}/triggers`, body)
  if (made.statusCode !== 201) throw new Error(made.body)
  return made.data.id as string
}

function triggerPath(id: string): string {
  return `/v1/marketplace-services/${rt.serviceId}/triggers/${id}`
}

async function triggeredBy(propertyId: string) {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON from the API
  return (await rt.api.get('/v1/deliveries?limit=200')).data.items.filter((d: any) => d.propertyId === propertyId && d.source === 'trigger')
}

async function newProperty(fields: Record<string, unknown>): Promise<string> {
  return (await rt.api.post('/v1/properties', { fields })).data.id as string
}

t.test('deleting a trigger cancels the calls it queued that no worker has claimed', async (t) => {
  const trigger = await addTrigger({ module: 'property', events: ['create'], fields: ['rooms'] })
  const id = await newProperty({ rooms: 3 })
  t.match(await triggeredBy(id), [{ status: 'pending' }], 'the create fired the trigger')
  t.equal((await rt.operator.delete(triggerPath(trigger))).statusCode, 204)
  const [delivery] = await triggeredBy(id)
  t.match(delivery, { status: 'cancelled', lastError: /no trigger of the service watches this change/, finishedAt: /Z$/ })
  const before = rt.provider.calls.length
  await rt.scheduler.runOnce()
  t.equal(rt.provider.calls.length, before, 'no call for a trigger that is gone')
})

t.test('a call another trigger of the service still matches goes out', async (t) => {
  const first = await addTrigger({ module: 'property', events: ['create'], fields: ['floor'] })
  const second = await addTrigger({ module: 'property', events: ['create', 'update'], fields: ['floor', 'lift'] })
  const id = await newProperty({ floor: 2 })
  t.equal((await rt.operator.delete(triggerPath(first))).statusCode, 204)
  t.match(await triggeredBy(id), [{ status: 'pending' }], 'the other trigger still asks for it')
  const before = rt.provider.calls.length
  await rt.scheduler.runOnce()
  t.equal(rt.provider.calls.length, before + 1)
  t.equal((await rt.operator.delete(triggerPath(second))).statusCode, 204)
})

t.test('changing a trigger cancels the calls it no longer matches, and only those', async (t) => {
  const trigger = await addTrigger({ module: 'property', events: ['create', 'update'], fields: ['garden', 'garage'] })
  const garden = await newProperty({ garden: true })
  const garage = await newProperty({ garage: true })
  const widened = await rt.operator.patch(triggerPath(trigger), { fields: ['garden', 'garage', 'cellar'] })
  t.equal(widened.statusCode, 200, widened.body)
  t.match(await triggeredBy(garden), [{ status: 'pending' }], 'a wider trigger cancels nothing')
  const narrowed = await rt.operator.patch(triggerPath(trigger), { fields: ['garage'] })
  t.equal(narrowed.statusCode, 200, narrowed.body)
  t.match(await triggeredBy(garden), [{ status: 'cancelled', lastError: /deleted or changed before the call/ }], 'a garden change is no longer watched')
  t.match(await triggeredBy(garage), [{ status: 'pending' }], 'a garage change still is')
  const events = await rt.operator.patch(triggerPath(trigger), { events: ['update'] })
  t.equal(events.statusCode, 200, events.body)
  t.match(await triggeredBy(garage), [{ status: 'cancelled' }], 'nor a create, once the trigger watches updates only')
  t.equal((await rt.operator.delete(triggerPath(trigger))).statusCode, 204)
})

t.test('a call in flight when its trigger is deleted finishes, and is not tried again', async (t) => {
  const trigger = await addTrigger({ module: 'property', events: ['create'], fields: ['balcony'] })
  const id = await newProperty({ balcony: true })
  rt.provider.queue(async () => {
    const deleted = await rt.operator.delete(triggerPath(trigger))
    t.equal(deleted.statusCode, 204, 'the trigger can be deleted while its call is made')
    return { status: 503, body: 'busy' }
  })
  const before = rt.provider.calls.length
  await rt.scheduler.runOnce()
  t.equal(rt.provider.calls.length, before + 1, 'the call in flight went out')
  t.match(await triggeredBy(id), [{ status: 'pending', attemptCount: 1 }], 'its outcome (retry) was recorded')
  rt.clock.advance(60_000)
  await rt.scheduler.runOnce()
  t.equal(rt.provider.calls.length, before + 1, 'the retry makes no call')
  const [delivery] = await triggeredBy(id)
  t.match(delivery, { status: 'cancelled', attemptCount: 1, lastError: /^cancelled: no trigger of service "Valuation" watches this change any more; no call was made/ })
  t.equal(delivery.attempts.length, 1, 'the attempt log holds the one call made, and nothing for the retry not made')

  const replayed = await rt.api.post(`/v1/deliveries/${delivery.id}/replay`)
  t.equal(replayed.statusCode, 409, replayed.body)
  t.match(replayed.data.detail, /No trigger of service "Valuation" watches this property change any more/)
  const recovery = await rt.api.post(`/v1/marketplace-services/${rt.serviceId}/recover`, { since: '2000-01-01T00:00:00Z', dryRun: true })
  t.equal(recovery.statusCode, 200, recovery.body)
  t.notOk(recovery.data.deliveryIds.includes(delivery.id), 'a recovery after an outage leaves it out too')
})

/**
 * A change queued while another request deletes what it needs (the change's transaction read it before
 * the delete committed, and committed after it): the delete's cancelling could not see the call.
 */
async function queuedInTheSameInstant(serviceName: string, fields: Record<string, unknown>, meanwhile: () => Promise<void>) {
  const id = await newProperty({})
  await rt.db.transaction().execute(async (trx) => {
    const queued = await queueTriggeredDeliveries(trx, {
      tenantId: rt.tenant.id, table: 'properties', recordId: id, event: 'update', changedFields: Object.keys(fields), now: rt.clock.now()
    })
    if (queued.map((q) => q.serviceName).join() !== serviceName) throw new Error(`queued ${JSON.stringify(queued)}`)
    await meanwhile()
  })
  return id
}

t.test('a call queued in the same instant as its trigger\'s delete is cancelled at its claim, without a call', async (t) => {
  const trigger = await addTrigger({ module: 'property', events: ['update'], fields: ['terrace'] })
  const id = await queuedInTheSameInstant('Valuation', { terrace: true }, async () => {
    t.equal((await rt.operator.delete(triggerPath(trigger))).statusCode, 204)
  })
  t.match(await triggeredBy(id), [{ status: 'pending' }], 'the delete could not see it')
  const before = rt.provider.calls.length
  await rt.scheduler.runOnce()
  t.equal(rt.provider.calls.length, before, 'no call')
  const [delivery] = await triggeredBy(id)
  t.match(delivery, { status: 'cancelled', attemptCount: 0, lastError: /^cancelled: no trigger of service "Valuation" watches this change any more/, finishedAt: /Z$/ })
  t.same(delivery.attempts, [], 'no attempt is logged for a call not made')
})
