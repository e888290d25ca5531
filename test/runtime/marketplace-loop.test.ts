import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import t from 'tap'
import type { ReceivedCall } from '../helpers/provider.js'
import { TestProvider } from '../helpers/provider.js'
import { setupRuntime } from '../helpers/runtime.js'

// The seed's story: a price changes → the valuation provider is called → it writes marketValue back
// with the call's apiClaim → that change calls the newsletter provider (json delivery).
const rt = await setupRuntime(t)
const newsletter = await TestProvider.start()
t.teardown(() => newsletter.close())
const valuationId = rt.serviceId

const created = await rt.operator.post('/v1/marketplace-services', {
  name: 'Newsletter sync', provider: 'ListCo', webhookUrl: `${newsletter.url}/hooks/newsletter`, delivery: 'json'
})
if (created.statusCode !== 201) throw new Error(created.body)
const newsletterId: string = created.data.id
let newsletterSecret: string = created.data.secret
await rt.api.put(`/v1/marketplace-services/${newsletterId}/activation`)
await rt.operator.post(`/v1/marketplace-services/${valuationId}/triggers`, { module: 'property', events: ['create', 'update'], fields: ['price', 'livingArea'] })
await rt.operator.post(`/v1/marketplace-services/${newsletterId}/triggers`, { module: 'property', events: ['update'], fields: ['marketValue'] })

/** Verifies a json call the way the Standard Webhooks spec tells a provider to; true when any signature matches. */
function standardWebhookValid(call: ReceivedCall, secret: string): boolean {
  const key = secret.startsWith('whsec_') ? Buffer.from(secret.slice(6), 'base64') : Buffer.from(secret)
  const signed = `${String(call.headers['webhook-id'])}.${String(call.headers['webhook-timestamp'])}.${call.body}`
  const expected = Buffer.from(createHmac('sha256', key).update(signed).digest('base64'))
  return String(call.headers['webhook-signature'] ?? '').split(' ').some((entry) => {
    const [version, signature = ''] = entry.split(',')
    const given = Buffer.from(signature)
    return version === 'v1' && given.length === expected.length && timingSafeEqual(given, expected)
  })
}

async function newProperty(fields: Record<string, unknown>) {
  const made = await rt.api.post('/v1/properties', { fields })
  if (made.statusCode !== 201) throw new Error(made.body)
  return made.data.id as string
}

async function deliveriesFor(propertyId: string) {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON from the API
  return (await rt.api.get('/v1/deliveries?limit=100')).data.items.filter((d: any) => d.propertyId === propertyId && d.source === 'trigger')
}

const callsAbout = (provider: TestProvider, propertyId: string) => provider.calls.filter((c) =>
  c.query.estateId === propertyId || (c.body !== '' && (JSON.parse(c.body) as { estateId?: string }).estateId === propertyId))

t.test('the whole loop: price change → valuation → write-back with the claim → newsletter', async (t) => {
  const propertyId = await newProperty({ street: 'Lindenweg 3' })
  t.equal((await deliveriesFor(propertyId)).length, 0, 'creating without a watched field fires nothing')

  const changed = await rt.api.patch(`/v1/properties/${propertyId}`, { fields: { price: 450000, livingArea: 96 } })
  t.equal(changed.statusCode, 200, changed.body)
  let deliveries = await deliveriesFor(propertyId)
  t.equal(deliveries.length, 1, 'one delivery for the valuation service')
  t.match(deliveries[0], { serviceId: valuationId, status: 'pending', event: 'update', changedFields: ['livingArea', 'price'] })

  t.equal((await rt.scheduler.runOnce()).deliveries, 1)
  const [valuationCall] = callsAbout(rt.provider, propertyId)
  t.ok(valuationCall, 'the valuation provider was called')
  t.ok(valuationCall!.signatureValid, 'its onOffice signature verifies with the service secret')
  t.match(valuationCall!.query, { event: 'update', changedFields: 'livingArea,price', estateId: propertyId, apiClaim: /^bcl_/ })
  t.equal(valuationCall!.headers['idempotency-key'], valuationCall!.query.deliveryId)

  // The provider reads the record and writes its market value back with the claim.
  const claim = rt.as(valuationCall!.query.apiClaim!)
  const read = await claim.get(`/v1/properties/${propertyId}`)
  t.equal(read.statusCode, 200, read.body)
  t.match(read.data.fields, { price: 450000 })
  const written = await claim.patch(`/v1/properties/${propertyId}`, { fields: { marketValue: 512000 } })
  t.equal(written.statusCode, 200, written.body)

  deliveries = await deliveriesFor(propertyId)
  const queued = deliveries.filter((d: { status: string }) => d.status === 'pending')
  t.equal(queued.length, 1, 'the write-back fired one delivery')
  t.match(queued[0], { serviceId: newsletterId, event: 'update', changedFields: ['marketValue'] })

  t.equal((await rt.scheduler.runOnce()).deliveries, 1)
  const [newsletterCall] = callsAbout(newsletter, propertyId)
  t.ok(newsletterCall, 'the newsletter provider was called')
  t.equal(newsletterCall!.method, 'POST')
  t.equal(newsletterCall!.headers['content-type'], 'application/json')
  t.equal(newsletterCall!.headers['webhook-id'], queued[0].id)
  t.equal(newsletterCall!.headers['idempotency-key'], queued[0].id)
  t.ok(standardWebhookValid(newsletterCall!, newsletterSecret), 'its Standard Webhooks signature verifies')
  t.match(JSON.parse(newsletterCall!.body), {
    customerWebId: rt.tenant.webId, estateId: propertyId, deliveryId: queued[0].id, event: 'update',
    changedFields: ['marketValue'], apiClaim: /^bcl_/, timestamp: Number(newsletterCall!.headers['webhook-timestamp']), parameters: {}
  })

  const activities = (await rt.api.get(`/v1/properties/${propertyId}/activities`)).data.items
  const messages = activities.map((a: { message: string }) => a.message).reverse()
  t.match(messages, [
    /Valuation answered HTTP 200 \(triggered by the update of livingArea, price\)/,
    /Valuation updated marketValue/,
    /Newsletter sync answered HTTP 200 \(triggered by the update of marketValue\)/
  ])
  t.match(activities.find((a: { kind: string }) => a.kind === 'recordUpdatedByService'), { serviceId: valuationId })
})

t.test('a change that does not alter a watched field fires nothing', async (t) => {
  const propertyId = await newProperty({ price: 300000 })
  t.equal((await deliveriesFor(propertyId)).length, 1, 'creating with a watched field fires the create trigger')
  await rt.scheduler.runOnce()
  for (const fields of [{ price: 300000 }, { colour: 'blue' }, { livingArea: null }]) {
    t.equal((await rt.api.patch(`/v1/properties/${propertyId}`, { fields })).statusCode, 200)
  }
  t.equal((await deliveriesFor(propertyId)).length, 1, 'the same price, an unwatched field, removing an absent field: nothing new')
})

t.test('an update through a claim never re-fires its own service, but fires the others', async (t) => {
  // The newsletter now also watches everything it might write itself.
  const own = await rt.operator.post(`/v1/marketplace-services/${newsletterId}/triggers`, { module: 'property', events: ['update'], fields: [] })
  t.teardown(() => rt.operator.delete(`/v1/marketplace-services/${newsletterId}/triggers/${own.data.id}`))
  const propertyId = await newProperty({ street: 'Am Hang 1' })
  await rt.api.patch(`/v1/properties/${propertyId}`, { fields: { marketValue: 1 } })
  await rt.scheduler.runOnce()
  const call = callsAbout(newsletter, propertyId).at(-1)!
  const apiClaim = (JSON.parse(call.body) as { apiClaim: string }).apiClaim
  const before = (await deliveriesFor(propertyId)).length

  const written = await rt.as(apiClaim).patch(`/v1/properties/${propertyId}`, { fields: { price: 99, subscribers: 12 } })
  t.equal(written.statusCode, 200, written.body)
  const fresh = (await deliveriesFor(propertyId)).slice(0, -before || undefined)
  t.same(fresh.map((d: { serviceId: string }) => d.serviceId), [valuationId], 'the valuation fires (price), the newsletter does not fire itself')
})

t.test('claims are refused outside their records and routes, once expired, and when tampered with', async (t) => {
  const propertyId = await newProperty({ price: 1000 })
  const otherId = await newProperty({ street: 'Elsewhere' })
  await rt.scheduler.runOnce()
  const token = callsAbout(rt.provider, propertyId).at(-1)!.query.apiClaim!
  const claim = rt.as(token)

  const refusals: [string, Promise<{ statusCode: number; body: string; headers: Record<string, unknown> }>][] = [
    ['another record', claim.get(`/v1/properties/${otherId}`)],
    ['another record, write', claim.patch(`/v1/properties/${otherId}`, { fields: { price: 1 } })],
    ['an address it does not name', claim.get(`/v1/addresses/${propertyId}`)],
    ['a list', claim.get('/v1/properties')],
    ['another route', claim.get('/v1/users')],
    ['processes', claim.get('/v1/process-instances')],
    ['delete', claim.delete(`/v1/properties/${propertyId}`)],
    ['the maintainer', claim.patch(`/v1/properties/${propertyId}`, { maintainerUserId: rt.worker.id })],
    ['the activity log', claim.get(`/v1/properties/${propertyId}/activities`)],
    ['an operator route', claim.get('/v1/tenants')]
  ]
  for (const [what, response] of refusals) {
    const answer = await response
    t.equal(answer.statusCode, 403, `${what}: ${answer.body}`)
    t.match(answer.headers['content-type'], /application\/problem\+json/)
  }

  const [body, mac] = token.split('.') as [string, string]
  const payload = JSON.parse(Buffer.from(body.slice(4), 'base64url').toString()) as { p: string }
  const widened = `bcl_${Buffer.from(JSON.stringify({ ...payload, p: otherId })).toString('base64url')}.${mac}`
  for (const [what, forged] of [['tampered payload', widened], ['tampered mac', `${body}.${randomBytes(32).toString('base64url')}`], ['truncated', body]]) {
    const answer = await rt.as(forged!).get(`/v1/properties/${otherId}`)
    t.equal(answer.statusCode, 401, `${what}: ${answer.body}`)
    t.match(answer.data.detail, /not valid/)
  }

  t.equal((await claim.get(`/v1/properties/${propertyId}`)).statusCode, 200, 'still valid after 0 minutes')
  rt.clock.advance(15 * 60_000 + 1000)
  const expired = await claim.get(`/v1/properties/${propertyId}`)
  t.equal(expired.statusCode, 401)
  t.match(expired.data.detail, /expired at .*each call brings a fresh one/)
})

t.test('during a secret rotation json calls carry both signatures', async (t) => {
  const current = (await rt.operator.get(`/v1/marketplace-services/${newsletterId}`))
  const next = `whsec_${randomBytes(32).toString('base64')}`
  const rotated = await rt.operator.patch(`/v1/marketplace-services/${newsletterId}`, { secret: next }, { 'if-match': `"${current.data.version}"` })
  t.equal(rotated.statusCode, 200, rotated.body)
  const previous = newsletterSecret
  newsletterSecret = next

  const propertyId = await newProperty({ street: 'Rotation 1' })
  await rt.api.patch(`/v1/properties/${propertyId}`, { fields: { marketValue: 7 } })
  await rt.scheduler.runOnce()
  const call = callsAbout(newsletter, propertyId).at(-1)!
  t.equal(String(call.headers['webhook-signature']).split(' ').length, 2, 'two signatures')
  t.ok(standardWebhookValid(call, next), 'the new secret verifies')
  t.ok(standardWebhookValid(call, previous), 'the previous secret verifies during the overlap')

  rt.clock.advance(24 * 3600_000 + 1000)
  const later = await newProperty({ street: 'Rotation 2' })
  await rt.api.patch(`/v1/properties/${later}`, { fields: { marketValue: 8 } })
  await rt.scheduler.runOnce()
  const after = callsAbout(newsletter, later).at(-1)!
  t.equal(String(after.headers['webhook-signature']).split(' ').length, 1, 'after the overlap only the new one')
  t.notOk(standardWebhookValid(after, previous))
})

t.test('addresses fire their own triggers, and their claim reaches the address only', async (t) => {
  const trigger = await rt.operator.post(`/v1/marketplace-services/${newsletterId}/triggers`, { module: 'address', events: ['create'], fields: ['email'] })
  t.equal(trigger.statusCode, 201, trigger.body)
  const address = await rt.api.post('/v1/addresses', { fields: { name: 'Erika Muster', email: 'erika@example.com' } })
  t.equal(address.statusCode, 201, address.body)
  await rt.scheduler.runOnce()
  const call = newsletter.calls.find((c) => c.body !== '' && (JSON.parse(c.body) as { addressId?: string }).addressId === address.data.id)
  t.ok(call, 'the newsletter provider was called for the new address')
  const body = JSON.parse(call!.body) as { event: string; changedFields: string[]; apiClaim: string; estateId?: string }
  t.match(body, { event: 'create', changedFields: ['email', 'name'] })
  t.notOk('estateId' in body, 'no property in an address call')
  const claim = rt.as(body.apiClaim)
  t.equal((await claim.get(`/v1/addresses/${address.data.id}`)).statusCode, 200)
  t.equal((await claim.patch(`/v1/addresses/${address.data.id}`, { fields: { subscribed: true } })).statusCode, 200)
  t.equal((await claim.get(`/v1/properties/${address.data.id}`)).statusCode, 403, 'a property route with the address id is refused')
})

t.test('a create trigger watching any field fires for a record created without fields', async (t) => {
  const trigger = await rt.operator.post(`/v1/marketplace-services/${valuationId}/triggers`, { module: 'address', events: ['create'] })
  t.equal(trigger.statusCode, 201, trigger.body)
  t.teardown(() => rt.operator.delete(`/v1/marketplace-services/${valuationId}/triggers/${trigger.data.id}`))
  const bare = await rt.api.post('/v1/addresses', {})
  t.equal(bare.statusCode, 201, bare.body)
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON from the API
  const queued = (await rt.api.get('/v1/deliveries?limit=100')).data.items.filter((d: any) => d.addressId === bare.data.id)
  t.match(queued, [{ serviceId: valuationId, source: 'trigger', event: 'create', changedFields: [] }], 'one delivery: the record was created')
  t.equal(queued.length, 1)

  await rt.scheduler.runOnce()
  const call = rt.provider.calls.find((c) => c.query.addressId === bare.data.id)
  t.ok(call?.signatureValid, 'the call went out, signed')
  t.match(call?.query, { event: 'create', changedFields: '', addressId: bare.data.id, apiClaim: /^bcl_/ })
  const [logged] = (await rt.api.get(`/v1/addresses/${bare.data.id}/activities`)).data.items
  t.match(logged, { kind: 'webhookSucceeded', message: 'Valuation answered HTTP 200 (triggered by the create).' })

  t.equal((await rt.api.patch(`/v1/addresses/${bare.data.id}`, { fields: {} })).statusCode, 200)
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON from the API
  const after = (await rt.api.get('/v1/deliveries?limit=100')).data.items.filter((d: any) => d.addressId === bare.data.id)
  t.equal(after.length, 1, 'an update that changes nothing still fires nothing')
})

t.test('a claim stops working once its service is no longer activated by the tenant', async (t) => {
  const propertyId = await newProperty({ street: 'Switched off 1' })
  await rt.api.patch(`/v1/properties/${propertyId}`, { fields: { marketValue: 9 } })
  await rt.scheduler.runOnce()
  const claim = rt.as((JSON.parse(callsAbout(newsletter, propertyId).at(-1)!.body) as { apiClaim: string }).apiClaim)
  t.equal((await claim.get(`/v1/properties/${propertyId}`)).statusCode, 200)
  t.equal((await rt.api.delete(`/v1/marketplace-services/${newsletterId}/activation`)).statusCode, 204)
  const refused = await claim.get(`/v1/properties/${propertyId}`)
  t.equal(refused.statusCode, 403)
  t.match(refused.data.detail, /no longer active/)

  rt.clock.advance(1000)
  t.equal((await rt.api.put(`/v1/marketplace-services/${newsletterId}/activation`)).statusCode, 200, 'activated again, within the claim\'s 15 minutes')
  const withdrawn = await claim.patch(`/v1/properties/${propertyId}`, { fields: { marketValue: 10 } })
  t.equal(withdrawn.statusCode, 403, 'a claim issued before the deactivation stays withdrawn')
  t.match(withdrawn.data.detail, /deactivated the service this apiClaim was issued to after issuing it/)
  t.match((await rt.api.get(`/v1/properties/${propertyId}`)).data.fields, { marketValue: 9 }, 'nothing written')

  await rt.api.patch(`/v1/properties/${propertyId}`, { fields: { marketValue: 11 } })
  await rt.scheduler.runOnce()
  const fresh = rt.as((JSON.parse(callsAbout(newsletter, propertyId).at(-1)!.body) as { apiClaim: string }).apiClaim)
  t.equal((await fresh.get(`/v1/properties/${propertyId}`)).statusCode, 200, 'a claim issued after the new activation works')
})

t.test('two providers writing back what the other\'s trigger watches stop ten write-backs down the chain', async (t) => {
  t.equal((await rt.api.put(`/v1/marketplace-services/${newsletterId}/activation`)).statusCode, 200, 'the newsletter activated again')
  const propertyId = await newProperty({ street: 'Ping 1' })
  let writes = 0
  const writeBack = async (apiClaim: string, fields: Record<string, unknown>) => {
    writes += 1
    const written = await rt.as(apiClaim).patch(`/v1/properties/${propertyId}`, { fields })
    return { status: written.statusCode === 200 ? 200 : 500, body: written.body }
  }
  rt.provider.always((call) => (call.query.estateId === propertyId ? writeBack(call.query.apiClaim!, { marketValue: writes + 1 }) : { status: 200, body: 'ok' }))
  newsletter.always((call) => {
    const body = JSON.parse(call.body) as { estateId?: string; apiClaim: string }
    return body.estateId === propertyId ? writeBack(body.apiClaim, { price: writes + 1 }) : { status: 200, body: 'ok' }
  })
  t.teardown(() => { rt.provider.always({ status: 200, body: 'ok' }); newsletter.always({ status: 200, body: 'ok' }) })

  await rt.api.patch(`/v1/properties/${propertyId}`, { fields: { price: 1 } })
  for (let i = 0; i < 20; i++) await rt.scheduler.runOnce()
  const deliveries = await deliveriesFor(propertyId)
  t.equal(deliveries.length, 11, 'the person\'s change, then ten write-backs, each firing the other service')
  t.ok(deliveries.every((d: { status: string }) => d.status === 'succeeded'))
  t.equal(writes, 11, 'and the eleventh write-back fires nothing')
  const stopped = (await rt.api.get(`/v1/properties/${propertyId}/activities?limit=100`)).data.items.filter((a: { kind: string }) => a.kind === 'triggersNotFired')
  t.match(stopped, [{ message: /^The change of marketValue by the provider of delivery [0-9a-f-]{36} fired no webhook triggers \(Newsletter sync\): .* chains at most 10 deep/ }])
})

t.test('a change queues one delivery per activated service whose trigger matches: none for a service this tenant has not activated, one however many of a service\'s triggers match', async (t) => {
  const service = async (name: string) => {
    const made = await rt.operator.post('/v1/marketplace-services', { name, provider: 'FlyerCo', webhookUrl: `${rt.provider.url}/hooks/${name.toLowerCase()}` })
    if (made.statusCode !== 201) throw new Error(made.body)
    const id: string = made.data.id
    for (const fields of [['flyerText'], []]) {
      const trigger = await rt.operator.post(`/v1/marketplace-services/${id}/triggers`, { module: 'property', events: ['update'], fields })
      if (trigger.statusCode !== 201) throw new Error(trigger.body)
    }
    return id
  }
  const twice = await service('Flyer')
  t.equal((await rt.api.put(`/v1/marketplace-services/${twice}/activation`)).statusCode, 200)
  const elsewhere = await service('Poster')
  const other = await rt.newRuntimeTenant('Poster Immobilien')
  t.equal((await other.tenant.client.put(`/v1/marketplace-services/${elsewhere}/activation`)).statusCode, 200, 'activated by another tenant only')

  const fire = async (client: typeof rt.api) => {
    const made = await client.post('/v1/properties', { fields: { street: 'Flyerweg 1' } })
    t.equal((await client.patch(`/v1/properties/${made.data.id}`, { fields: { flyerText: 'Open house' } })).statusCode, 200)
    const queued = []
    for (const serviceId of [twice, elsewhere]) {
      const listed = await client.get(`/v1/deliveries?serviceId=${serviceId}&limit=200`)
      queued.push(...(listed.data.items as { propertyId: string; serviceId: string }[]).filter((d) => d.propertyId === made.data.id))
    }
    return queued
  }
  t.match(await fire(rt.api), [{ serviceId: twice, event: 'update', changedFields: ['flyerText'] }],
    'this tenant: one delivery of the service both of whose triggers match, none of the service it has not activated')
  t.equal((await fire(rt.api)).length, 1)
  t.match(await fire(other.tenant.client), [{ serviceId: elsewhere, event: 'update', changedFields: ['flyerText'] }],
    'the tenant that activated it gets its delivery')
  for (let i = 0; i < 3; i++) await rt.scheduler.runOnce()
})
