import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { setupRuntime } from '../helpers/runtime.js'

t.test('a finished delivery replays as a new round with the same deliveryId', async (t) => {
  const rt = await setupRuntime(t)
  const templateId = await rt.template([{ kind: 'webhook', name: 'Sync the list', refersTo: { property: true } }])
  const started = await rt.start(templateId)
  const deliveryId = started.steps[0].delivery.id

  const early = await rt.api.post(`/v1/deliveries/${deliveryId}/replay`)
  t.equal(early.statusCode, 409, 'a pending delivery cannot be replayed')

  await rt.scheduler.runOnce()
  t.equal((await rt.instance(started.id)).status, 'completed')
  const replayed = await rt.api.post(`/v1/deliveries/${deliveryId}/replay`)
  t.equal(replayed.statusCode, 202, replayed.body)
  t.match(replayed.data, { id: deliveryId, status: 'pending', round: 2, attemptCount: 0 })

  await rt.scheduler.runOnce()
  const [first, second] = rt.provider.calls
  t.equal(rt.provider.calls.length, 2)
  t.equal(second!.query.deliveryId, deliveryId)
  t.equal(second!.headers['idempotency-key'], first!.headers['idempotency-key'])
  t.ok(second!.signatureValid)
  const delivery = (await rt.api.get(`/v1/deliveries/${deliveryId}`)).data
  t.equal(delivery.status, 'succeeded')
  t.same(delivery.attempts.map((a: { round: number; outcome: string }) => [a.round, a.outcome]), [[1, 'succeeded'], [2, 'succeeded']])
  const after = await rt.instance(started.id)
  t.equal(after.status, 'completed', 'the process is not touched')
  t.equal(after.steps[0].state, 'done')

  const other = await rt.newTenant()
  t.equal((await other.client.post(`/v1/deliveries/${deliveryId}/replay`)).statusCode, 404, 'invisible to other tenants')

  // A service no longer active for the tenant is not called: the replay says so at once, as a recovery does.
  t.equal((await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { active: false })).statusCode, 200)
  const refused = await rt.api.post(`/v1/deliveries/${deliveryId}/replay`)
  t.equal(refused.statusCode, 409, refused.body)
  t.match(refused.data.detail, /is not active for this tenant/)
  t.equal((await rt.api.get(`/v1/deliveries/${deliveryId}`)).data.round, 2, 'no new round')
})

t.test('a failed step is retried through its process, not replayed', async (t) => {
  const rt = await setupRuntime(t)
  rt.provider.always({ status: 404 })
  const templateId = await rt.template([{ kind: 'webhook', name: 'Sync the list', refersTo: { property: true } }])
  const started = await rt.start(templateId)
  await rt.scheduler.runOnce()
  const response = await rt.api.post(`/v1/deliveries/${started.steps[0].delivery.id}/replay`)
  t.equal(response.statusCode, 409)
  t.match(response.data.detail, /retry it with POST \/v1\/process-instances\/.*\/retry/)
})

t.test('a failed step of a service no longer active for the tenant is not retried: 409, as its replay answers', async (t) => {
  const rt = await setupRuntime(t)
  rt.provider.always({ status: 404 })
  const templateId = await rt.template([{ kind: 'webhook', name: 'Value it', refersTo: { property: true } }])
  const started = await rt.start(templateId)
  await rt.scheduler.runOnce()
  const stepId = started.steps[0].id
  t.equal((await rt.instance(started.id)).steps[0].state, 'failed')

  t.equal((await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { active: false })).statusCode, 200)
  const refused = await rt.api.post(`/v1/process-instances/${started.id}/steps/${stepId}/retry`)
  t.equal(refused.statusCode, 409, refused.body)
  t.match(refused.data.detail, /is not active for this tenant/)
  const after = await rt.instance(started.id)
  t.equal(after.steps[0].state, 'failed', 'the step stays failed, for a person to resolve')
  t.match(after.steps[0].delivery, { status: 'failed', round: 1 }, 'no new round')

  t.equal((await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { active: true })).statusCode, 200)
  const retried = await rt.api.post(`/v1/process-instances/${started.id}/steps/${stepId}/retry`)
  t.equal(retried.statusCode, 200, retried.body)
  t.match(retried.data.steps[0].delivery, { status: 'pending', round: 2 })
})

// A worker's claim turns a step running, an expired lease turns it back, and a replay's call ends,
// none with a new version of the process: a poll with the ETag held was told 304 and kept a copy
// that showed the step due while its call was in flight, or the replayed delivery still on its way.
t.test('a process polled with If-None-Match while its call is queued, in flight or replayed is answered in full, never with a stale 304', async (t) => {
  const rt = await setupRuntime(t)
  const templateId = await rt.template([{ kind: 'webhook', name: 'Value it', refersTo: { property: true } }])
  const started = await rt.start(templateId)
  const url = `/v1/process-instances/${started.id}`
  const poll = (etag: string) => rt.api.get(url, { 'if-none-match': etag })
  const queued = await rt.api.get(url)
  t.equal(queued.data.steps[0].state, 'due')

  let answer!: () => void
  rt.provider.queue(() => new Promise((resolve) => { answer = () => resolve({ status: 200 }) }))
  const run = rt.scheduler.runOnce()
  for (let i = 0; i < 300 && rt.provider.calls.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(rt.provider.calls.length, 1, 'the call is in flight')
  const inFlight = await poll(String(queued.headers.etag))
  t.equal(inFlight.statusCode, 200, 'the copy held shows the step due: not current')
  t.equal(inFlight.data.steps[0].state, 'running')
  t.equal(inFlight.headers.etag, queued.headers.etag, 'the version has not moved')
  answer()
  await run

  const done = await poll(String(queued.headers.etag))
  t.equal(done.statusCode, 200)
  t.equal(done.data.status, 'completed')
  t.equal((await poll(String(done.headers.etag))).statusCode, 304, 'nothing queued or in flight: its ETag names it')

  const replayed = await rt.api.post(`/v1/deliveries/${started.steps[0].delivery.id}/replay`)
  t.equal(replayed.statusCode, 202, replayed.body)
  const again = await poll(String(done.headers.etag))
  t.equal(again.statusCode, 200, 'the replay is queued: answered in full')
  t.match(again.data.steps[0].delivery, { status: 'pending', round: 2 })
  await rt.scheduler.runOnce()
  const after = await poll(String(again.headers.etag))
  t.equal(after.statusCode, 200, 'the replay\'s call moved the version on')
  t.match(after.data.steps[0].delivery, { status: 'succeeded', round: 2 })
  t.equal(after.data.version, again.data.version + 1)
  t.equal((await poll(String(after.headers.etag))).statusCode, 304)
})

t.test('a process whose call waits for a later attempt answers 304 to its ETag until the attempt is due', async (t) => {
  const rt = await setupRuntime(t)
  rt.provider.queue({ status: 503, headers: { 'retry-after': '600' } })
  const templateId = await rt.template([{ kind: 'webhook', name: 'Value it later', refersTo: { property: true } }])
  const started = await rt.start(templateId)
  await rt.scheduler.runOnce()
  const url = `/v1/process-instances/${started.id}`
  const waiting = await rt.api.get(url)
  t.match(waiting.data.steps[0], { state: 'due', delivery: { status: 'pending', attempts: 1 } })
  t.equal((await rt.api.get(url, { 'if-none-match': String(waiting.headers.etag) })).statusCode, 304, 'ten minutes to go: nothing can change it unversioned')
  rt.clock.advance(9 * 60_000)
  const due = await rt.api.get(url, { 'if-none-match': String(waiting.headers.etag) })
  t.equal(due.statusCode, 200, 'due within two minutes: a claim may change it any moment, so it is answered in full')
  t.equal(due.headers.etag, waiting.headers.etag)
})

// A new round starts clean: its attempts count from 0 and it has no last status until its first call.
// The previous round's 200 (or 404 and "gave up") showed on a replay or retry waiting for its call,
// as if the new round had already been answered; the attempt log keeps every round's attempts.
t.test('a replayed or retried delivery shows no last status until its new round has called', async (t) => {
  const rt = await setupRuntime(t)
  const templateId = await rt.template([{ kind: 'webhook', name: 'Sync the list', refersTo: { property: true } }])
  const done = await rt.start(templateId)
  await rt.scheduler.runOnce()
  const doneId = done.steps[0].delivery.id
  t.match((await rt.api.get(`/v1/deliveries/${doneId}`)).data, { status: 'succeeded', lastStatusCode: 200 })
  const replayed = await rt.api.post(`/v1/deliveries/${doneId}/replay`)
  t.equal(replayed.statusCode, 202, replayed.body)
  t.match(replayed.data, { status: 'pending', round: 2, attemptCount: 0, lastStatusCode: null, lastError: null })
  t.same(replayed.data.attempts.map((a: { round: number; statusCode: number }) => [a.round, a.statusCode]), [[1, 200]], 'round 1 stays in the log')
  t.match((await rt.instance(done.id)).steps[0].delivery, { status: 'pending', round: 2, attempts: 0, lastStatusCode: null, lastError: null })

  rt.provider.always({ status: 404, body: 'no such estate' })
  const failing = await rt.start(templateId)
  await rt.scheduler.runOnce()
  const failed = await rt.instance(failing.id)
  t.match(failed.steps[0].delivery, { status: 'failed', round: 1, attempts: 1, lastStatusCode: 404, lastError: 'HTTP 404 is not retried' })
  const retried = await rt.api.post(`/v1/process-instances/${failing.id}/steps/${failing.steps[0].id}/retry`)
  t.equal(retried.statusCode, 200, retried.body)
  t.match(retried.data.steps[0].delivery, { status: 'pending', round: 2, attempts: 0, lastStatusCode: null, lastError: null })
  const delivery = (await rt.api.get(`/v1/deliveries/${failing.steps[0].delivery.id}`)).data
  t.match(delivery, { status: 'pending', round: 2, attemptCount: 0, lastStatusCode: null, lastError: null })
  t.same(delivery.attempts.map((a: { round: number; statusCode: number }) => [a.round, a.statusCode]), [[1, 404]])
})

t.test('a delivery replayed a hundred times and more lists its latest 100 attempts and counts the earlier ones', async (t) => {
  const rt = await setupRuntime(t)
  const templateId = await rt.template([{ kind: 'webhook', name: 'Sync the list', refersTo: { property: true } }])
  const [often, once] = [await rt.start(templateId), await rt.start(templateId)]
  await rt.scheduler.runOnce()
  const deliveryId = often.steps[0].delivery.id
  // Rounds 2 to 131 as 130 replays that the provider refused would have left them.
  await sql`insert into delivery_attempts (tenant_id, id, delivery_id, round, attempt_number, started_at, duration_ms, outcome, status_code, response_body)
    select tenant_id, gen_random_uuid(), id, r, 1, created_at + r * interval '1 minute', 3, 'failed', 404, 'no such list'
    from deliveries, generate_series(2, 131) as r where id = ${deliveryId}`.execute(rt.db)
  await sql`update deliveries set round = 131 where id = ${deliveryId}`.execute(rt.db)
  t.equal((await rt.api.post(`/v1/deliveries/${deliveryId}/replay`)).statusCode, 202)
  await rt.scheduler.runOnce()

  const delivery = (await rt.api.get(`/v1/deliveries/${deliveryId}`)).data
  const rounds = (d: { attempts: { round: number }[] }) => d.attempts.map((a) => a.round)
  t.equal(delivery.attempts.length, 100, 'at most 100 attempts listed')
  t.same(rounds(delivery), Array.from({ length: 100 }, (_, i) => i + 33), 'the latest ones, oldest first')
  t.match(delivery.attempts.at(-1), { round: 132, attempt: 1, outcome: 'succeeded' }, 'ending with the replay\'s call')
  t.equal(delivery.earlierAttempts, 32, 'the 32 before them counted')

  const listed = (await rt.api.get(`/v1/deliveries?serviceId=${rt.serviceId}`)).data.items
  const byId = new Map(listed.map((d: { id: string }) => [d.id, d]))
  t.same(byId.get(deliveryId), delivery, 'the list shows it as its own read does')
  t.match(byId.get(once.steps[0].delivery.id), { earlierAttempts: 0, attempts: [{ round: 1, outcome: 'succeeded' }] }, 'a delivery with few attempts lists them all')
})
