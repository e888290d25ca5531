import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { randomUUID } from 'node:crypto'
import { setupRuntime } from '../helpers/runtime.js'
import { heldDeletion } from '../helpers/deletion.js'
import { DAY, HOUR } from '../helpers/clock.js'

// What the scheduler does when the world changed under a process: a service switched off, a worker
// that died on every attempt, a row it cannot process, an SMTP server that is down.
const MAX_ATTEMPTS = 3
const rt = await setupRuntime(t, { maxAttempts: MAX_ATTEMPTS })
rt.provider.always(() => ({ status: 200, body: 'ok' }))

const callsFor = (stepId: string) => rt.provider.calls.filter((c) => c.query.stepId === stepId)

async function attemptsOf(deliveryId: string) {
  return (await rt.api.get(`/v1/deliveries/${deliveryId}`)).data.attempts as { error: string | null; statusCode: number | null }[]
}

t.test('the scheduler moves the instance version on: the ETag a client holds goes stale', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Valuation', refersTo: { property: true } }, { kind: 'task', name: 'Call the owner' }])
  const started = await rt.start(templateId)
  t.equal((await rt.scheduler.runOnce()).deliveries, 1)
  const got = await rt.api.get(`/v1/process-instances/${started.id}`)
  t.equal(got.data.steps[0].state, 'done')
  t.equal(got.data.version, started.version + 1, 'one change, one version')
  t.equal(got.headers.etag, `"${started.version + 1}"`)
})

t.test('a service deactivated after its step was queued is not called: the step fails, the controller is told', async (t) => {
  const service = await rt.operator.post('/v1/marketplace-services', { name: 'Mailing sync', provider: 'ListCo', webhookUrl: `${rt.provider.url}/hooks/sync` })
  t.equal(service.statusCode, 201, service.body)
  t.equal((await rt.api.put(`/v1/marketplace-services/${service.data.id}/activation`)).statusCode, 200)
  const templateId = await rt.template([{ kind: 'webhook', name: 'Sync the mailing list', serviceId: service.data.id }])
  const started = await rt.start(templateId)
  const off = await rt.operator.patch(`/v1/marketplace-services/${service.data.id}`, { active: false })
  t.equal(off.statusCode, 200, off.body)

  t.equal((await rt.scheduler.runOnce()).deliveries, 1)
  const stepId = started.steps[0].id
  t.equal(callsFor(stepId).length, 0, 'no call was made')
  const instance = await rt.instance(started.id)
  t.equal(instance.steps[0].state, 'failed', 'the step waits for a person')
  const attempts = await attemptsOf(started.steps[0].delivery.id)
  t.equal(attempts.length, 1)
  t.match(attempts[0]!.error, /^service "Mailing sync" was deactivated by the operator \(active: false\); no call was made$/)
  const mails = await sql<{ kind: string }>`select kind from outbox_mails where dedupe_key like ${`stepFailed:${started.steps[0].delivery.id}:%`}`.execute(rt.db)
  t.same(mails.rows.map((m) => m.kind), ['stepFailed'])
})

t.test('a service the tenant deactivates while a process\'s step still calls it: the step fails into a manual one, the controller is told', async (t) => {
  const service = await rt.operator.post('/v1/marketplace-services', { name: 'Energy certificate', provider: 'CertCo', webhookUrl: `${rt.provider.url}/hooks/cert` })
  t.equal(service.statusCode, 201, service.body)
  const activation = `/v1/marketplace-services/${service.data.id}/activation`
  t.equal((await rt.api.put(activation)).statusCode, 200)
  const templateId = await rt.template([{ kind: 'webhook', name: 'Order the certificate', serviceId: service.data.id }, { kind: 'task', name: 'File it' }])
  const started = await rt.start(templateId)
  // The template no longer calls the service (a deactivation would answer 409), but the running process does.
  const templateStep = (await rt.api.get(`/v1/process-templates/${templateId}/steps`)).data.items[0]
  t.equal((await rt.api.delete(`/v1/process-templates/${templateId}/steps/${templateStep.id}`)).statusCode, 204)
  t.equal((await rt.api.delete(activation)).statusCode, 204)
  t.match((await rt.instance(started.id)).steps[0], { state: 'due', delivery: { status: 'pending' } }, 'a step\'s delivery is not cancelled with the activation')

  t.equal((await rt.scheduler.runOnce()).deliveries, 1)
  const stepId = started.steps[0].id
  t.equal(callsFor(stepId).length, 0, 'no call was made')
  const instance = await rt.instance(started.id)
  t.match(instance.steps[0], { state: 'failed', delivery: { status: 'failed', lastError: /service "Energy certificate" is no longer active for this tenant; no call was made/ } },
    'the step waits for a person')
  const mails = await sql<{ kind: string }>`select kind from outbox_mails where dedupe_key like ${`stepFailed:${started.steps[0].delivery.id}:%`}`.execute(rt.db)
  t.same(mails.rows.map((m) => m.kind), ['stepFailed'])

  t.equal((await rt.api.put(activation)).statusCode, 200)
  const recovery = await rt.api.post(`/v1/marketplace-services/${service.data.id}/recover`, { since: '2000-01-01T00:00:00Z' })
  t.same(recovery.data.deliveryIds, [started.steps[0].delivery.id], 'once reactivated, a recovery retries the step')
  await rt.scheduler.runOnce()
  t.equal(callsFor(stepId).length, 1)
  t.equal((await rt.instance(started.id)).steps[0].state, 'done')
})

t.test('a delivery whose workers died on every attempt is given up after maxAttempts, without another call', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Valuation that kills workers', refersTo: { property: true } }])
  const started = await rt.start(templateId)
  const deliveryId = started.steps[0].delivery.id as string
  // As the reaper finds it after the last allowed attempt's worker crashed: running, its lease over.
  await sql`update deliveries set status = 'running', attempt_count = ${MAX_ATTEMPTS}, lease_owner = 'gone',
    lease_expires_at = ${new Date(rt.clock.now().getTime() - 1000)} where id = ${deliveryId}`.execute(rt.db)
  await sql`update instance_steps set state = 'running' where id = ${started.steps[0].id}`.execute(rt.db)

  const run = await rt.scheduler.runOnce()
  t.equal(run.reaped, 1)
  t.equal(callsFor(started.steps[0].id).length, 0, 'not called again')
  t.equal((await rt.instance(started.id)).steps[0].state, 'failed')
  const attempts = await attemptsOf(deliveryId)
  t.match(attempts.map((a) => a.error), [/lease expired/, new RegExp(`gave up after ${MAX_ATTEMPTS} attempts without an outcome`)])
})

t.test('a step the scheduler cannot start is logged and does not hold up the steps behind it', async (t) => {
  const templateId = await rt.template([
    { kind: 'task', name: 'Prepare' },
    { kind: 'task', name: 'Follow up', start: { mode: 'daysAfterPrevious', days: 1 } }
  ])
  const poisoned = await rt.start(templateId)
  const healthy = await rt.start(templateId)
  for (const instance of [poisoned, healthy]) {
    t.equal((await rt.api.post(`/v1/process-instances/${instance.id}/advance`, { outcome: 'done' })).statusCode, 200)
  }
  // A row the database refuses to start: its named user does not exist (only a hand-edited row can be like this).
  await sql`update instance_steps set responsibility = 'user', responsible_user_id = ${randomUUID()}, start_at = start_at - interval '1 minute'
    where id = ${poisoned.steps[1].id}`.execute(rt.db)
  const errors: object[] = []
  const scheduler = rt.newScheduler({}, { info() {}, warn() {}, error: (obj) => errors.push(obj) })

  rt.clock.advance(2 * 24 * 3600 * 1000)
  const run = await scheduler.runOnce()
  t.equal(run.stepsStarted, 1, 'the healthy step started')
  t.equal((await rt.instance(healthy.id)).steps[1].state, 'due')
  t.equal((await rt.instance(poisoned.id)).steps[1].state, 'waiting', 'the bad one is left as it was')
  t.ok(errors.some((e) => (e as { id?: string }).id === poisoned.steps[1].id), 'the failure is logged with the step id')
})

t.test('a user that a started process still names for a later step cannot be deleted', async (t) => {
  const named = (await rt.api.post('/v1/users', { name: 'Nina Named', email: 'nina@example.com' })).data
  const templateId = await rt.template([
    { kind: 'task', name: 'First' },
    { kind: 'task', name: 'Nina\'s part', responsibility: { user: named.id } }
  ])
  const started = await rt.start(templateId)
  const templateStep = (await rt.api.get(`/v1/process-templates/${templateId}/steps`)).data.items[1]
  const changed = await rt.api.patch(`/v1/process-templates/${templateId}/steps/${templateStep.id}`, { responsibility: 'processResponsible' })
  t.equal(changed.statusCode, 200, changed.body)

  const refused = await rt.api.delete(`/v1/users/${named.id}`)
  t.equal(refused.statusCode, 409, 'the template no longer names her, but the running process does')
  t.match(refused.data.detail, started.id)
})

t.test('SMTP down: the first failures put the rest of the batch back untouched instead of trying each', async (t) => {
  await sql`update outbox_mails set sent_at = now() where sent_at is null`.execute(rt.db)
  const templateId = await rt.template([{ kind: 'task', name: 'Skipped during the outage' }])
  // Mails go out eight at a time: twelve mails, so that some are never tried.
  for (let i = 0; i < 12; i++) {
    const started = await rt.start(templateId)
    t.equal((await rt.api.post(`/v1/process-instances/${started.id}/advance`, { outcome: 'skipped' })).statusCode, 200)
  }
  rt.smtp.refusing = true
  t.teardown(() => { rt.smtp.refusing = false })
  t.equal((await rt.scheduler.runOnce()).mails, 0)
  const rows = (await sql<{ attempt_count: number; lease_expires_at: Date | null; last_error: string | null }>`
    select attempt_count, lease_expires_at, last_error from outbox_mails where sent_at is null order by attempt_count desc
  `.execute(rt.db)).rows
  t.equal(rows.length, 12, 'all twelve still queued')
  const tried = rows.filter((r) => r.attempt_count === 1)
  t.ok(tried.length >= 1 && tried.length <= 8, `${tried.length} tried (at most the eight in flight at the first failure)`)
  t.ok(tried.every((r) => r.last_error !== null), 'each tried one says why it failed')
  t.same(rows.filter((r) => r.attempt_count === 0).map((r) => r.last_error), Array(12 - tried.length).fill(null), 'the rest put back untouched')
  t.ok(rows.every((r) => r.lease_expires_at === null), 'none left leased')
})

t.test('a tenant deleted while its step\'s call is in flight: the call\'s apiClaim is refused, its outcome is dropped, and the batch beside it is recorded', async (t) => {
  const gone = await rt.newTenant({ name: 'Leaving GmbH' })
  t.equal((await gone.client.put(`/v1/marketplace-services/${rt.serviceId}/activation`)).statusCode, 200)
  const user = (await gone.client.post('/v1/users', { name: 'Lea Leaving', email: 'lea@example.com' })).data
  const property = (await gone.client.post('/v1/properties', { maintainerUserId: user.id, fields: { price: 1 } })).data
  const template = (await gone.client.post('/v1/process-templates', { name: 'Value it' })).data
  const step = await gone.client.post(`/v1/process-templates/${template.id}/steps`,
    { kind: 'webhook', name: 'Valuation', serviceId: rt.serviceId, refersTo: { property: true }, start: { mode: 'afterPrevious' }, responsibility: 'processResponsible' })
  t.equal(step.statusCode, 201, step.body)
  t.equal((await gone.client.patch(`/v1/process-templates/${template.id}`, { active: true }, { 'if-match': '"2"' })).statusCode, 200)
  const leaving = await gone.client.post('/v1/process-instances', { templateId: template.id, responsibleUserId: user.id, propertyId: property.id })
  t.equal(leaving.statusCode, 201, leaving.body)
  const staying = await rt.start(await rt.template([{ kind: 'webhook', name: 'Valuation', refersTo: { property: true } }]))

  let writeBack: number | undefined
  rt.provider.always(async (call) => {
    if (call.query.customerWebId !== gone.webId) return { status: 200, body: 'ok' }
    t.equal((await rt.operator.delete(`/v1/tenants/${gone.id}`)).statusCode, 204, 'the tenant can be deleted while its call is made')
    writeBack = (await rt.as(call.query.apiClaim!).patch(`/v1/properties/${property.id}`, { fields: { marketValue: 2 } })).statusCode
    return { status: 200, body: 'ok' }
  })
  t.teardown(() => rt.provider.always(() => ({ status: 200, body: 'ok' })))
  const run = await rt.scheduler.runOnce()
  t.equal(run.deliveries, 2, 'both calls went out')
  t.equal(writeBack, 403, 'the deleted tenant\'s claim writes nothing back')
  const left = await sql<{ n: number }>`select count(*)::int as n from delivery_attempts where tenant_id = ${gone.id}`.execute(rt.db)
  t.equal(left.rows[0]?.n, 0, 'no attempt of the deleted tenant is logged')
  t.equal((await rt.instance(staying.id)).steps[0].state, 'done', 'the other tenant\'s call in the same batch is recorded')
})

t.test('a tenant being deleted has no call made: its due call is not claimed while the deletion waits, another tenant\'s is', async (t) => {
  const going = await rt.newRuntimeTenant('Going GmbH')
  await going.start(await going.template([{ kind: 'webhook', name: 'Valuation', refersTo: { property: true } }]))
  const staying = await rt.start(await rt.template([{ kind: 'webhook', name: 'Valuation', refersTo: { property: true } }]))
  const deletion = await heldDeletion(rt, going.tenant.id)
  const before = rt.provider.calls.length
  await rt.scheduler.runOnce()
  t.same(rt.provider.calls.slice(before).map((call) => call.query.customerWebId), [rt.tenant.webId], 'only the other tenant\'s call went out')
  t.equal((await rt.instance(staying.id)).steps[0].state, 'done')
  const { rows } = await sql<{ status: string; attempt_count: number }>`select status, attempt_count from deliveries where tenant_id = ${going.tenant.id}`.execute(rt.db)
  t.same(rows, [{ status: 'pending', attempt_count: 0 }], 'the going tenant\'s call stays queued, untried, until the deletion takes it')
  t.equal((await deletion.finish()).statusCode, 204)
})

t.test('a tenant being deleted has no waiting step started: its step whose time came is left while the deletion waits, another tenant\'s starts', async (t) => {
  const steps = [{ kind: 'task', name: 'Look again tomorrow', start: { mode: 'daysAfterPrevious', days: 1 } }]
  const going = await rt.newRuntimeTenant('Going GmbH')
  const goingId = (await going.start(await going.template(steps))).id
  const stayingId = (await rt.start(await rt.template(steps))).id
  rt.clock.advance(DAY + HOUR)
  const deletion = await heldDeletion(rt, going.tenant.id)
  await rt.scheduler.runOnce()
  t.equal((await rt.instance(stayingId)).steps[0].state, 'due', 'the other tenant\'s step started')
  const { rows } = await sql<{ state: string }>`select state from instance_steps where instance_id = ${goingId}`.execute(rt.db)
  t.same(rows, [{ state: 'waiting' }], 'the going tenant\'s step waits until the deletion takes it')
  t.equal((await deletion.finish()).statusCode, 204)
})
