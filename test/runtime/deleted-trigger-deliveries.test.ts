import t from 'tap'
import { deleteService, hasServiceHistory, lockServiceToDelete } from '../../src/modules/marketplace/services/repository.js'
import { queueTriggeredDeliveries } from '../../src/modules/records/trigger-repository.js'
import { claimDeliveries } from '../../src/scheduler/claim-deliveries.js'
import { cancelClaimedDelivery } from '../../src/scheduler/delivery-repository.js'
import { reapExpiredLeases } from '../../src/scheduler/reap-expired-leases.js'
import { waitForLockWait } from '../helpers/database.js'
import { setupRuntime } from '../helpers/runtime.js'

// A trigger says which changes its provider wants called: once none of the service's triggers
// matches a change any more, or the tenant has deactivated the service, its call is not made and the
// delivery ends `cancelled`, saying why. Each test watches fields of its own.
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
  t.match(delivery, { status: 'cancelled', attemptCount: 1, lastError: /^cancelled: no trigger of the service watches this change any more \(deleted or changed before the call\)$/ })
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
  t.match(delivery, { status: 'cancelled', attemptCount: 0, lastError: /^cancelled: no trigger of the service watches this change any more/, finishedAt: /Z$/ })
  t.same(delivery.attempts, [], 'no attempt is logged for a call not made')
})

/** A service of its own, activated by the tenant, whose trigger watches `field` of properties. */
async function serviceWatching(name: string, field: string) {
  const made = await rt.operator.post('/v1/marketplace-services', { name, provider: 'ListCo', webhookUrl: `${rt.provider.url}/hooks/${field}` })
  if (made.statusCode !== 201) throw new Error(made.body)
  const serviceId = made.data.id as string
  const trigger = await rt.operator.post(`/v1/marketplace-services/${serviceId}/triggers`, { module: 'property', events: ['create', 'update'], fields: [field] })
  if (trigger.statusCode !== 201) throw new Error(trigger.body)
  const activation = `/v1/marketplace-services/${serviceId}/activation`
  if ((await rt.api.put(activation)).statusCode !== 200) throw new Error('activation')
  return { serviceId, activation }
}

t.test('deactivating the service for the tenant cancels its queued trigger calls, saying why', async (t) => {
  const { serviceId, activation } = await serviceWatching('Newsletter', 'newsletter')
  const id = await newProperty({ newsletter: true })
  t.match(await triggeredBy(id), [{ status: 'pending', serviceId }])
  t.equal((await rt.api.delete(activation)).statusCode, 204)
  const [delivery] = await triggeredBy(id)
  t.match(delivery, { status: 'cancelled', attemptCount: 0, lastError: /^cancelled: the tenant deactivated the service before the call/, finishedAt: /Z$/ })
  const before = rt.provider.calls.length
  await rt.scheduler.runOnce()
  t.equal(rt.provider.calls.length, before, 'no call')

  const replayed = await rt.api.post(`/v1/deliveries/${delivery.id}/replay`)
  t.equal(replayed.statusCode, 409, 'not while the service is deactivated')
  t.equal((await rt.api.put(activation)).statusCode, 200)
  const recovery = await rt.api.post(`/v1/marketplace-services/${serviceId}/recover`, { since: '2000-01-01T00:00:00Z', dryRun: true })
  t.same(recovery.data.deliveryIds, [], 'a recovery after an outage leaves out a call the tenant withdrew')
  const again = await rt.api.post(`/v1/deliveries/${delivery.id}/replay`)
  t.equal(again.statusCode, 202, 'once reactivated, it may be sent again by hand')
  await rt.scheduler.runOnce()
  t.equal(rt.provider.calls.length, before + 1)
  t.match(await triggeredBy(id), [{ status: 'succeeded', round: 2 }])
})

t.test('a call queued in the same instant as the tenant\'s deactivation is cancelled at its claim, without a call', async (t) => {
  const { activation } = await serviceWatching('Flyer print', 'flyer')
  const id = await queuedInTheSameInstant('Flyer print', { flyer: true }, async () => {
    t.equal((await rt.api.delete(activation)).statusCode, 204)
  })
  t.match(await triggeredBy(id), [{ status: 'pending' }], 'the deactivation could not see it')
  const before = rt.provider.calls.length
  await rt.scheduler.runOnce()
  t.equal(rt.provider.calls.length, before, 'no call')
  const [delivery] = await triggeredBy(id)
  t.match(delivery, { status: 'cancelled', attemptCount: 0, lastError: /^cancelled: the tenant deactivated the service before the call$/ })
  t.same(delivery.attempts, [], 'no attempt is logged for a call not made')
})

t.test('the operator\'s deactivation of a service fails its queued trigger calls without a call, for a recovery to send once it is active again', async (t) => {
  const { serviceId } = await serviceWatching('Portal export', 'portal')
  const id = await newProperty({ portal: true })
  t.equal((await rt.operator.patch(`/v1/marketplace-services/${serviceId}`, { active: false })).statusCode, 200)
  t.match(await triggeredBy(id), [{ status: 'pending' }], 'not the tenant\'s doing: nothing is cancelled')
  const before = rt.provider.calls.length
  await rt.scheduler.runOnce()
  t.equal(rt.provider.calls.length, before, 'no call')
  const [delivery] = await triggeredBy(id)
  t.match(delivery, { status: 'failed', lastError: /service "Portal export" was deactivated by the operator \(active: false\); no call was made/ })
  t.equal((await rt.operator.patch(`/v1/marketplace-services/${serviceId}`, { active: true })).statusCode, 200)
  const recovery = await rt.api.post(`/v1/marketplace-services/${serviceId}/recover`, { since: '2000-01-01T00:00:00Z' })
  t.same(recovery.data.deliveryIds, [delivery.id])
  await rt.scheduler.runOnce()
  t.equal(rt.provider.calls.length, before + 1)
})

t.test('a worker whose claim was taken over cancels nothing: the delivery ends once, by the claim that holds it', async (t) => {
  const { serviceId, activation } = await serviceWatching('Key safe', 'keysafe')
  const id = await queuedInTheSameInstant('Key safe', { keysafe: true }, async () => {
    t.equal((await rt.api.delete(activation)).statusCode, 204)
  })
  const claim = () => claimDeliveries(rt.db, { workerId: 'probe', now: rt.clock.now(), leaseMs: 1000, limit: 5, only: { services: [serviceId], hosts: [] } })
  const [lost] = await claim()
  t.match(lost, { serviceState: 'withdrawn', attempt: 1 })
  rt.clock.advance(2000)
  t.equal(await reapExpiredLeases(rt.db, rt.clock.now()), 1, 'the reaper takes the delivery back')
  t.equal(await cancelClaimedDelivery(rt.db, lost!, 'cancelled: late', rt.clock.now()), false, 'the reaped claim cancels nothing')
  t.match(await triggeredBy(id), [{ status: 'pending', attemptCount: 1 }])

  const [second] = await claim()
  t.equal(second!.fence, lost!.fence + 1)
  t.equal(await cancelClaimedDelivery(rt.db, lost!, 'cancelled: late', rt.clock.now()), false, 'nor does it once another worker holds it')
  t.equal(await cancelClaimedDelivery(rt.db, second!, 'cancelled: now', rt.clock.now()), true)
  t.equal(await cancelClaimedDelivery(rt.db, second!, 'cancelled: twice', rt.clock.now()), false, 'and it ends once')
  const [delivery] = await triggeredBy(id)
  t.match(delivery, { status: 'cancelled', lastError: 'cancelled: now', attemptCount: 1 }, 'the count keeps the reaped attempt and never goes below it')
  t.match(delivery.attempts, [{ outcome: 'aborted' }], 'the attempt log holds the reaped attempt only')
})

t.test('a create and an update that would fire a service the operator is deleting wait for the delete and fire nothing, rather than fail', async (t) => {
  const { serviceId } = await serviceWatching('Closing down', 'closing')
  const id = await newProperty({ street: 'Endweg 1' })
  // The operator's delete (services/service.ts, deleteService) holds the service from its lock to its commit.
  let deleteNow!: () => void
  let locked!: () => void
  const lockedNow = new Promise<void>((resolve) => { locked = resolve })
  const deleting = rt.db.transaction().execute(async (trx) => {
    await lockServiceToDelete(trx, serviceId)
    locked()
    await new Promise<void>((resolve) => { deleteNow = resolve })
    t.notOk(await hasServiceHistory(trx, serviceId), 'no call of the service is on record: the delete may go ahead')
    await deleteService(trx, serviceId)
  })
  await lockedNow
  const created = rt.api.post('/v1/properties', { fields: { closing: true } })
  const updated = rt.api.patch(`/v1/properties/${id}`, { fields: { closing: true } })
  await waitForLockWait(rt.db, 2)
  deleteNow()
  await deleting
  const [create, update] = await Promise.all([created, updated])
  t.equal(create.statusCode, 201, create.body)
  t.equal(update.statusCode, 200, update.body)
  t.match((await rt.api.get(`/v1/properties/${id}`)).data.fields, { closing: true }, 'the update is written')
  t.same([...await triggeredBy(id), ...await triggeredBy(create.data.id)], [], 'and fires nothing: the service is gone')
})
