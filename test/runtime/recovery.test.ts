import { randomUUID } from 'node:crypto'
import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { newId } from '../../src/lib/ids.js'
import { RECOVERY_LIMIT } from '../../src/modules/deliveries/service.js'
import { assertProblem } from '../helpers/assertions.js'
import { FAST_RETRIES, setupRuntime } from '../helpers/runtime.js'

// A provider was down: its failed deliveries are queued again in one call, and every hand-made resend
// (recovery or replay) shows on the activity logs.
const rt = await setupRuntime(t, { maxAttempts: 2 })
await rt.operator.post(`/v1/marketplace-services/${rt.serviceId}/triggers`, { module: 'property', events: ['update'], fields: ['price'] })
const recoverUrl = `/v1/marketplace-services/${rt.serviceId}/recover`

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON from the API
type Json = any
const delivery = async (id: string): Promise<Json> => (await rt.api.get(`/v1/deliveries/${id}`)).data
const kindsOn = async (path: string) => (await rt.api.get(`${path}/activities`)).data.items.map((a: { kind: string }) => a.kind)

t.test('recover re-queues what failed during the outage; a dry run only counts', async (t) => {
  rt.provider.always({ status: 503, body: 'down for maintenance' })
  const oldProperty = (await rt.api.post('/v1/properties', { fields: {} })).data.id
  await rt.api.patch(`/v1/properties/${oldProperty}`, { fields: { price: 1 } })
  await rt.scheduler.runOnce()
  rt.clock.advance(60_000)
  await rt.scheduler.runOnce()
  rt.clock.advance(3600_000)
  const outageStart = rt.clock.now()

  const property = (await rt.api.post('/v1/properties', { fields: {} })).data.id
  await rt.api.patch(`/v1/properties/${property}`, { fields: { price: 2 } })
  const templateId = await rt.template([{ kind: 'webhook', name: 'Valuation during the outage', refersTo: { property: true } }])
  const failing = await rt.start(templateId)
  const handled = await rt.start(templateId)
  await rt.scheduler.runOnce()
  rt.clock.advance(60_000)
  await rt.scheduler.runOnce()
  t.equal((await rt.instance(failing.id)).steps[0].state, 'failed')
  const byHand = await rt.api.post(`/v1/process-instances/${handled.id}/advance`, { outcome: 'done', note: 'valued by phone' })
  t.equal(byHand.statusCode, 200, 'a failed step someone finished by hand is not sent again')

  const triggered = (await rt.api.get(`/v1/deliveries?serviceId=${rt.serviceId}&status=failed&limit=100`)).data.items
    .find((d: Json) => d.propertyId === property && d.source === 'trigger')
  t.ok(triggered, 'the trigger delivery failed')
  const stepDelivery = failing.steps[0].delivery.id

  const dry = await rt.api.post(recoverUrl, { since: outageStart.toISOString(), dryRun: true })
  t.equal(dry.statusCode, 200, dry.body)
  t.same(dry.data, { dryRun: true, count: 2, deliveryIds: [triggered.id, stepDelivery].sort() })
  t.equal((await delivery(triggered.id)).status, 'failed', 'a dry run changes nothing')

  rt.provider.always({ status: 200, body: 'back' })
  const done = await rt.api.post(recoverUrl, { since: outageStart.toISOString() })
  t.equal(done.statusCode, 200, done.body)
  t.match(done.data, { dryRun: false, count: 2 })
  t.match(await delivery(triggered.id), { status: 'pending', round: 2, attemptCount: 0, lastStatusCode: null, lastError: null }, 'a new round, clean')
  t.equal((await rt.instance(failing.id)).steps[0].state, 'due', 'the failed step is back with the scheduler')
  t.ok((await kindsOn(`/v1/properties/${property}`)).includes('deliveryRecovered'), 'audited on the record')
  t.ok((await kindsOn(`/v1/process-instances/${failing.id}`)).includes('webhookRetried'), 'audited on the process')

  await rt.scheduler.runOnce()
  t.equal((await delivery(triggered.id)).status, 'succeeded')
  t.equal((await rt.instance(failing.id)).status, 'completed')
  const again = await rt.api.post(recoverUrl, { since: outageStart.toISOString() })
  t.match(again.data, { count: 0 }, 'nothing left to recover')
})

t.test('a recovery that meets the database away fails, and leaves nothing it skipped: the next call queues it', async (t) => {
  rt.provider.always({ status: 503, body: 'down' })
  const since = rt.clock.now()
  const templateId = await rt.template([{ kind: 'webhook', name: 'Valuation while Postgres hiccups', refersTo: { property: true } }])
  const failing = await rt.start(templateId)
  await rt.scheduler.runOnce()
  rt.clock.advance(60_000)
  await rt.scheduler.runOnce()
  t.equal((await rt.instance(failing.id)).steps[0].state, 'failed')
  const deliveryId = failing.steps[0].delivery.id

  // The database cancels the retry's write of this delivery, as a statement timeout would.
  await sql.raw(`create function test_cancel_requeue() returns trigger language plpgsql as $$
    begin raise exception 'canceling statement due to statement timeout' using errcode = '57014'; end $$`).execute(rt.db)
  await sql.raw(`create trigger test_cancel_requeue before update on deliveries for each row
    when (old.id = '${deliveryId}' and new.status = 'pending') execute function test_cancel_requeue()`).execute(rt.db)
  t.teardown(() => sql.raw('drop function if exists test_cancel_requeue() cascade').execute(rt.db))
  const cut = await rt.api.post(recoverUrl, { since: since.toISOString() })
  assertProblem(t, cut, 503)
  t.equal((await rt.instance(failing.id)).steps[0].state, 'failed', 'the step is still failed')

  await sql.raw('drop function test_cancel_requeue() cascade').execute(rt.db)
  rt.provider.always({ status: 200, body: 'back' })
  const done = await rt.api.post(recoverUrl, { since: since.toISOString() })
  t.equal(done.statusCode, 200, done.body)
  t.same(done.data, { dryRun: false, count: 1, deliveryIds: [deliveryId] }, 'the call again queues it')
  t.equal((await rt.instance(failing.id)).steps[0].state, 'due')
  await rt.scheduler.runOnce()
  t.equal((await rt.instance(failing.id)).status, 'completed')
})

t.test('a replay is audited on the records it is about', async (t) => {
  rt.provider.always({ status: 200, body: 'ok' })
  const property = (await rt.api.post('/v1/properties', { fields: {} })).data.id
  await rt.api.patch(`/v1/properties/${property}`, { fields: { price: 3 } })
  await rt.scheduler.runOnce()
  const [sent] = (await rt.api.get(`/v1/deliveries?serviceId=${rt.serviceId}&limit=100`)).data.items.filter((d: Json) => d.propertyId === property)
  const replayed = await rt.api.post(`/v1/deliveries/${sent.id}/replay`)
  t.equal(replayed.statusCode, 202, replayed.body)
  const log = (await rt.api.get(`/v1/properties/${property}/activities`)).data.items
  t.match(log[0], { kind: 'deliveryReplayed', message: new RegExp(`Delivery ${sent.id} sent again by hand \\(round 2\\)`) })
})

t.test('recover answers 404, 409 and 400 where it cannot run', async (t) => {
  assertProblem(t, await rt.api.post(`/v1/marketplace-services/${randomUUID()}/recover`, { since: new Date().toISOString() }), 404)
  const other = await rt.operator.post('/v1/marketplace-services', { name: 'Not activated', provider: 'X', webhookUrl: 'https://x.example/hook' })
  assertProblem(t, await rt.api.post(`/v1/marketplace-services/${other.data.id}/recover`, { since: new Date().toISOString() }), 409, /activate it/)
  assertProblem(t, await rt.api.post(recoverUrl, { since: 'yesterday' }), 400)
  assertProblem(t, await rt.api.post(recoverUrl, {}), 400)
  assertProblem(t, await rt.api.post(recoverUrl, { since: '2024-06-30T23:59:60Z' }), 400, /not a time Baton can read/)
  assertProblem(t, await rt.api.post(recoverUrl, { since: '2024-01-01T00:00:00+01' }), 400)
  assertProblem(t, await rt.operator.post(recoverUrl, { since: new Date().toISOString() }), 403)
})

// A call queues at most RECOVERY_LIMIT. Taken oldest first, those it queued that failed again before
// the next call (the provider still failing fast) were the oldest again, and the next call queued the
// same ones: the rest were never reached. Those that gave up longest ago go first, so each call reaches
// further, and a delivery queued again that fails again waits behind the rest.
t.test('successive recoveries reach every failed delivery, also while those queued fail again', async (t) => {
  // What the tests before left queued (a replay) is sent first, and answered.
  rt.provider.always({ status: 200, body: 'ok' })
  await rt.scheduler.runOnce()
  rt.clock.advance(60_000)
  rt.provider.always({ status: 404, body: 'not yet' })
  const failOnce = rt.newScheduler({ policy: { ...FAST_RETRIES, maxAttempts: 1 } })
  const since = rt.clock.now()
  const property = (await rt.api.post('/v1/properties', { fields: {} })).data.id
  await rt.api.patch(`/v1/properties/${property}`, { fields: { price: 7 } })
  await failOnce.runOnce()
  const [first] = (await rt.api.get(`/v1/deliveries?serviceId=${rt.serviceId}&status=failed&limit=100`)).data.items
    .filter((d: Json) => d.propertyId === property)
  t.ok(first, 'the trigger delivery failed')
  // More of the same change's calls, as a longer outage leaves them: each gave up a moment after the one before.
  const copies = Array.from({ length: RECOVERY_LIMIT + 2 }, () => newId())
  await sql`insert into deliveries
    select (jsonb_populate_record(d, jsonb_build_object('id', c.id, 'finished_at', d.finished_at + c.n * interval '1 ms'))).*
    from deliveries d, unnest(${copies}::uuid[]) with ordinality c(id, n) where d.id = ${first.id}`.execute(rt.db)
  const all = [first.id, ...copies]

  rt.clock.advance(60_000)
  const one = await rt.api.post(recoverUrl, { since: since.toISOString() })
  t.equal(one.statusCode, 200, one.body)
  t.same(one.data.deliveryIds, all.slice(0, RECOVERY_LIMIT), 'the first call queues those that gave up first')
  await failOnce.runOnce()
  t.equal((await sql<{ n: number }>`select count(*)::int as n from deliveries where id = any(${all}::uuid[]) and status = 'failed' and round = 2`
    .execute(rt.db)).rows[0]!.n, RECOVERY_LIMIT, 'every one queued failed again')

  rt.clock.advance(60_000)
  const two = await rt.api.post(recoverUrl, { since: since.toISOString(), dryRun: true })
  t.same(two.data.deliveryIds.slice(0, 3), all.slice(RECOVERY_LIMIT), 'a dry run names those not yet queued first')
  const three = await rt.api.post(recoverUrl, { since: since.toISOString() })
  t.equal(three.statusCode, 200, three.body)
  t.equal(three.data.count, RECOVERY_LIMIT)
  t.same(three.data.deliveryIds.slice(0, 3), all.slice(RECOVERY_LIMIT), 'the next call reaches those the first did not')
  t.same(three.data.deliveryIds.slice(3), all.slice(0, RECOVERY_LIMIT - 3), 'then those that failed again, in the order they did')
})
