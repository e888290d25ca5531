import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { sql } from '../../src/db/kysely.js'
import { holdRow, waitForLockWait } from '../helpers/database.js'
import { setupRuntime } from '../helpers/runtime.js'

// A provider writes back with the apiClaim of a trigger's call, over HTTP to the app on 127.0.0.1,
// while the tenant deactivates the service (DELETE …/activation). Either the write-back is written
// first and the deactivation after it, or the deactivation first and the write-back is refused (403):
// a write-back let in before the deactivation must not land once the deactivation has been answered.

const rt = await setupRuntime(t)
await rt.app.listen({ port: 0, host: '127.0.0.1' })
const origin = `http://127.0.0.1:${(rt.app.server.address() as AddressInfo).port}`

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests read JSON freely
type Loose = any

async function call(key: string, method: string, path: string, body?: unknown): Promise<{ status: number; data: Loose }> {
  const response = await fetch(`${origin}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  const text = await response.text()
  return { status: response.status, data: text ? JSON.parse(text) : undefined }
}

const trigger = await rt.operator.post(`/v1/marketplace-services/${rt.serviceId}/triggers`, { module: 'property', events: ['update'], fields: ['watched'] })
if (trigger.statusCode !== 201) throw new Error(trigger.body)

/**
 * A tenant of its own (no template of it calls the service, so it may deactivate it), a property, and
 * the apiClaim of the trigger's call about it, as the provider received it.
 */
async function claimedProperty(name: string) {
  const { tenant } = await rt.newRuntimeTenant(name)
  const property = (await call(tenant.key, 'POST', '/v1/properties', { fields: { price: 1 } })).data
  t.equal((await call(tenant.key, 'PATCH', `/v1/properties/${property.id}`, { fields: { watched: 1 } })).status, 200)
  await rt.scheduler.runOnce()
  const apiClaim = rt.provider.calls.find((c) => c.query.estateId === property.id)?.query.apiClaim
  if (!apiClaim) throw new Error('the provider was not called')
  return { tenant, propertyId: property.id as string, apiClaim }
}

/** Resolves 'answered' once the request is answered, or 'waiting' once that many sessions wait for a lock. */
async function answeredOrWaiting(request: Promise<unknown>, sessions: number): Promise<'answered' | 'waiting'> {
  let answered = false
  void request.then(() => { answered = true }, () => { answered = true })
  for (let polls = 0; polls < 1000; polls++) {
    if (answered) return 'answered'
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock'`.execute(rt.db)
    if (rows[0]!.n >= sessions) return 'waiting'
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  throw new Error('the request was neither answered nor waiting for a lock')
}

const versionOf = async (propertyId: string) =>
  (await sql<{ version: number }>`select version from properties where id = ${propertyId}`.execute(rt.db)).rows[0]!.version

/** Another write holds the record (a person's), and the provider's write-back, let in, waits for it. */
async function writeBackWaitingForRecord(propertyId: string, apiClaim: string) {
  const person = await holdRow(rt.db, sql`select id from properties where id = ${propertyId} for no key update`)
  const writing = call(apiClaim, 'PATCH', `/v1/properties/${propertyId}`, { fields: { marketValue: 512000 } })
  await waitForLockWait(rt.db)
  return { person, writing }
}

/** The write-back was refused as its claim's service is no longer active (403): the record is at `before`, and no write-back is logged. */
async function refusedUnwritten(
  t: Test, written: { status: number; data: Loose }, { tenant, propertyId, before }: { tenant: { key: string }; propertyId: string; before: number }, why: string
): Promise<void> {
  t.equal(written.status, 403, `${why}: ${JSON.stringify(written.data)}`)
  t.match(written.data.detail, /no longer active for the tenant/)
  t.equal(await versionOf(propertyId), before, 'nothing was written')
  const logged = (await call(tenant.key, 'GET', `/v1/properties/${propertyId}/activities?limit=100`)).data.items
  t.notOk(logged.some((a: Loose) => a.kind === 'recordUpdatedByService'), 'no write-back logged')
}

t.test('a write-back waiting for its record when the tenant deactivates the service is refused (403), and keeps the deactivation waiting no longer', async (t) => {
  const { tenant, propertyId, apiClaim } = await claimedProperty('Deactivates during a write-back')
  const before = await versionOf(propertyId)
  const { person, writing } = await writeBackWaitingForRecord(propertyId, apiClaim)
  const deactivating = call(tenant.key, 'DELETE', `/v1/marketplace-services/${rt.serviceId}/activation`)
  // A second session waiting would be the deactivation, held up by a write-back that waits for something else.
  const deactivation = await answeredOrWaiting(deactivating, 2)
  await person.release()
  const [written, deactivated] = await Promise.all([writing, deactivating])
  t.equal(deactivation, 'answered', 'the deactivation was answered while the write-back waited')
  t.equal(deactivated.status, 204, JSON.stringify(deactivated.data))
  await refusedUnwritten(t, written, { tenant, propertyId, before }, 'the write-back, let in before the deactivation, is refused after it')
})

t.test('a write-back let in while the deactivation is being written is refused once it has been (403), and writes nothing', async (t) => {
  const { tenant, propertyId, apiClaim } = await claimedProperty('Deactivation under way')
  // A trigger call of the service is queued; a worker holds it (its claim), so the deactivation, which
  // cancels such calls, waits there: it has deleted the activation but not committed yet.
  t.equal((await call(tenant.key, 'PATCH', `/v1/properties/${propertyId}`, { fields: { watched: 2 } })).status, 200)
  const worker = await holdRow(rt.db, sql`select id from deliveries where property_id = ${propertyId} and status = 'pending' for update`)
  const deactivating = call(tenant.key, 'DELETE', `/v1/marketplace-services/${rt.serviceId}/activation`)
  await waitForLockWait(rt.db)
  const before = await versionOf(propertyId)
  const writing = call(apiClaim, 'PATCH', `/v1/properties/${propertyId}`, { fields: { marketValue: 512000 } })
  // The write-back passed the check of its claim (the deactivation had not committed): it is written
  // before the deactivation commits, or it waits for the deactivation and is then refused.
  const first = await answeredOrWaiting(writing, 2)
  await worker.release()
  const [written, deactivated] = await Promise.all([writing, deactivating])
  t.equal(deactivated.status, 204, JSON.stringify(deactivated.data))
  if (first === 'answered') {
    t.equal(written.status, 200, `written before the deactivation committed: ${JSON.stringify(written.data)}`)
    return
  }
  await refusedUnwritten(t, written, { tenant, propertyId, before }, 'it waited for the deactivation')
})

t.test('a write-back waiting for its record when the operator deactivates the service (active: false) is refused (403)', async (t) => {
  const { tenant, propertyId, apiClaim } = await claimedProperty('Operator deactivates during a write-back')
  const before = await versionOf(propertyId)
  const { person, writing } = await writeBackWaitingForRecord(propertyId, apiClaim)
  const service = await rt.operator.get(`/v1/marketplace-services/${rt.serviceId}`)
  const deactivated = await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { active: false }, { 'if-match': `"${service.data.version}"` })
  t.teardown(async () => {
    const now = await rt.operator.get(`/v1/marketplace-services/${rt.serviceId}`)
    await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { active: true }, { 'if-match': `"${now.data.version}"` })
  })
  t.equal(deactivated.statusCode, 200, deactivated.body)
  await person.release()
  const written = await writing
  await refusedUnwritten(t, written, { tenant, propertyId, before }, 'the write-back is refused')
})
