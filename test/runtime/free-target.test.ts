import { randomBytes } from 'node:crypto'
import { sql } from '../../src/db/kysely.js'
import t from 'tap'
import { createHttpClient } from '../../src/adapters/http-client.js'
import { parseAllowedTargets } from '../../src/adapters/address-policy.js'
import { claimDeliveries, type ClaimOptions, type ClaimedDelivery } from '../../src/scheduler/claim-deliveries.js'
import { releaseDelivery } from '../../src/scheduler/delivery-repository.js'
import { hostKey } from '../../src/lib/host-key.js'
import { DEFAULT_RETRY_POLICY } from '../../src/scheduler/retry-policy.js'
import { TestProvider } from '../helpers/provider.js'
import { FAST_RETRIES, hostLimitedScheduler, setupRuntime } from '../helpers/runtime.js'

// A tenant's own endpoint as a webhook step's target: a second real server on 127.0.0.1 that checks
// every call with the secret the tenant gave, as the tenant's own code would.
const rt = await setupRuntime(t, { secretsKey: randomBytes(32).toString('base64') })
const crm = await TestProvider.start(`whsec_${randomBytes(32).toString('base64')}`)
t.teardown(() => crm.close())
const target = (path: string, delivery: 'query' | 'json') => ({ url: `${crm.url}${path}`, secret: crm.secret, delivery })

const ids = (steps: { state: string }[]) => steps.map((s) => s.state)
const releaseDeliveries = (claimed: ClaimedDelivery[]) => Promise.all(claimed.map((claim) => releaseDelivery(rt.db, claim)))

t.test('query and json calls to a free target are signed, keyed and logged as a service\'s are', async (t) => {
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Tell the CRM (query)', responsibility: 'propertyMaintainer', refersTo: { property: true },
      target: target('/hooks/query?channel=baton', 'query'), parameters: { list: 'Käufer Köln', priority: 2, urgent: true } },
    { kind: 'webhook', name: 'Tell the CRM (json)', refersTo: { property: true }, target: target('/hooks/json', 'json'), parameters: { list: 'buyers', priority: 2, urgent: false } },
    { kind: 'task', name: 'Call the owner' }
  ])
  const started = await rt.start(templateId)
  t.same(ids(started.steps), ['due', 'pending', 'pending'])
  t.match(started.steps[0], { serviceId: null, target: { url: `${crm.url}/hooks/query?channel=baton`, delivery: 'query' }, delivery: { status: 'pending' } })
  t.notOk(JSON.stringify(started).includes(crm.secret.slice(6)), 'the instance does not show the secret')

  // A later edit of the template does not reach the running process: it called the copy made at start.
  const templateSteps = (await rt.api.get(`/v1/process-templates/${templateId}/steps`)).data.items
  const edited = await rt.api.patch(`/v1/process-templates/${templateId}/steps/${templateSteps[1].id}`,
    { target: target('/hooks/elsewhere', 'query') })
  t.equal(edited.statusCode, 200, edited.body)

  const t0 = rt.clock.now()
  await rt.scheduler.runOnce()
  await rt.scheduler.runOnce()
  const view = await rt.instance(started.id)
  t.same(ids(view.steps), ['done', 'done', 'due'], 'both webhook steps are done, and the task is due')
  t.equal(rt.provider.calls.length, 0, 'the marketplace service was not called')
  t.same(crm.calls.map((c) => `${c.method} ${new URL(c.url).pathname}`), ['GET /hooks/query', 'POST /hooks/json'])
  const [query, json] = crm.calls as [typeof crm.calls[0], typeof crm.calls[0]]

  t.ok(query.signatureValid, 'the query call verifies with the target\'s secret (onOffice scheme)')
  t.match(query.query, {
    channel: 'baton', list: 'Käufer Köln', priority: '2', urgent: '1', customerWebId: rt.tenant.webId, customerName: 'Muster Immobilien',
    userId: rt.worker.id, estateId: rt.propertyId, processId: started.id, stepId: view.steps[0].id, deliveryId: view.steps[0].delivery.id,
    timestamp: String(Math.floor(t0.getTime() / 1000))
  })
  t.notOk('apiClaim' in query.query, 'a free target gets no apiClaim: it calls back with the tenant\'s own key')
  t.equal(query.headers['idempotency-key'], view.steps[0].delivery.id)
  t.match(query.headers['user-agent'], /^Baton\//)

  t.ok(json.signatureValid, 'the json call verifies with the target\'s secret (Standard Webhooks)')
  t.equal(json.headers['webhook-id'], view.steps[1].delivery.id)
  t.equal(json.headers['idempotency-key'], view.steps[1].delivery.id)
  const body = JSON.parse(json.body)
  t.match(body, { customerWebId: rt.tenant.webId, estateId: rt.propertyId, stepId: view.steps[1].id, parameters: { list: 'buyers', priority: 2, urgent: false } })
  t.notOk('apiClaim' in body)

  const deliveries = await rt.api.get(`/v1/deliveries?instanceId=${started.id}`)
  t.equal(deliveries.data.items.length, 2)
  for (const delivery of deliveries.data.items) {
    t.match(delivery, { serviceId: null, source: 'step', status: 'succeeded', attempts: [{ outcome: 'succeeded', statusCode: 200, responseBody: 'ok' }] })
  }
  const activities = await rt.api.get(`/v1/process-instances/${started.id}/activities?limit=50`)
  const host = new URL(crm.url).host
  t.ok(activities.data.items.some((a: { kind: string; message: string }) => a.kind === 'webhookSucceeded' && a.message === `${host} answered HTTP 200.`),
    'the activity names the target\'s host')
  const stored = await rt.db.selectFrom('instance_steps').select('target_secret').where('instance_id', '=', started.id).where('position', '=', 1).executeTakeFirstOrThrow()
  t.match(stored.target_secret, /^enc:v1:/, 'the instance\'s copy of the secret stays sealed')
})

t.test('a failing target is retried with backoff, then its step fails and the controller is mailed', async (t) => {
  const scheduler = rt.newScheduler({ policy: { ...FAST_RETRIES, maxAttempts: 3 } })
  crm.always({ status: 503, body: 'crm down' })
  t.teardown(() => crm.always({ status: 200, body: 'ok' }))
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Tell the failing CRM', refersTo: { property: true }, deadlineDays: 1, target: target('/hooks/down', 'json') },
    { kind: 'task', name: 'Afterwards' }
  ])
  const started = await rt.start(templateId)
  const stepId = started.steps[0].id
  const callsFor = () => crm.calls.filter((c) => new URL(c.url).pathname === '/hooks/down')

  await scheduler.runOnce()
  let delivery = (await rt.api.get(`/v1/deliveries?stepId=${stepId}`)).data.items[0]
  t.match(delivery, { status: 'pending', attemptCount: 1, lastStatusCode: 503 })
  t.equal(delivery.nextAttemptAt, new Date(rt.clock.now().getTime() + DEFAULT_RETRY_POLICY.scheduleMs[0]!).toISOString(), 'the first retry waits as for a service')
  t.equal((await rt.instance(started.id)).steps[0].state, 'due')
  rt.clock.advance(DEFAULT_RETRY_POLICY.scheduleMs[0]!)
  await scheduler.runOnce()
  rt.clock.advance(DEFAULT_RETRY_POLICY.scheduleMs[1]!)
  await scheduler.runOnce()
  rt.clock.advance(DEFAULT_RETRY_POLICY.scheduleMs[2]!)
  t.equal((await scheduler.runOnce()).deliveries, 0, 'no fourth attempt')

  delivery = (await rt.api.get(`/v1/deliveries?stepId=${stepId}`)).data.items[0]
  t.match(delivery, { serviceId: null, status: 'failed', attemptCount: 3, lastStatusCode: 503 })
  t.same(delivery.attempts.map((a: { outcome: string; statusCode: number; responseBody: string }) => [a.outcome, a.statusCode, a.responseBody]),
    [['retry', 503, 'crm down'], ['retry', 503, 'crm down'], ['failed', 503, 'crm down']])
  const calls = callsFor()
  t.equal(calls.length, 3)
  t.ok(calls.every((c) => c.signatureValid), 'every attempt is signed')
  t.equal(new Set(calls.map((c) => c.headers['idempotency-key'])).size, 1, 'one Idempotency-Key across the retries')
  const view = await rt.instance(started.id)
  t.same(ids(view.steps), ['failed', 'pending'], 'the step turns manual')

  await scheduler.runOnce()
  const failed = rt.smtp.mails.filter((m) => m.subject.startsWith('Webhook step failed: "Tell the failing CRM"'))
  t.equal(failed.length, 1, 'the controller is mailed once')
  t.same(failed[0]!.to, [rt.controller.email])
  t.match(failed[0]!.text, /gave up after 3 attempts/)
  const activities = (await rt.api.get(`/v1/properties/${rt.propertyId}/activities?limit=200`)).data.items
  t.ok(activities.some((a: { kind: string; stepId: string }) => a.kind === 'webhookFailed' && a.stepId === stepId), 'the failure is on the property\'s activity log')

  // Resolved by hand, a retry sends it again to the same target, in a new round.
  crm.always({ status: 200, body: 'ok' })
  const retried = await rt.api.post(`/v1/process-instances/${started.id}/steps/${stepId}/retry`)
  t.equal(retried.statusCode, 200, retried.body)
  await scheduler.runOnce()
  t.same(ids((await rt.instance(started.id)).steps), ['done', 'due'])
  t.equal(callsFor().length, 4)
  t.ok(callsFor()[3]!.signatureValid)
})

t.test('calls to a free target share the per-host limit', async (t) => {
  const LIMIT = 2
  const scheduler = hostLimitedScheduler(t, rt, { perHostConcurrency: LIMIT, concurrency: 8 }, 4)
  let open = 0
  let maxOpen = 0
  crm.always(async () => {
    open += 1
    maxOpen = Math.max(maxOpen, open)
    await new Promise((resolve) => setTimeout(resolve, 200))
    open -= 1
    return { status: 200, body: 'ok' }
  })
  t.teardown(() => crm.always({ status: 200, body: 'ok' }))
  const templateId = await rt.template([{ kind: 'webhook', name: 'Slow CRM', target: target('/hooks/slow', 'query') }])
  const before = crm.calls.length
  for (let i = 0; i < 6; i++) await rt.start(templateId)
  const run = await scheduler.runOnce()
  // The first claim takes all six: two call, two wait, two go back at their place, to be claimed once
  // the host has room again (a later claim leaves the target out while its host is full, or takes no
  // more than its line's places: up to two more where the line emptied while its slots lingered idle).
  t.ok(run.deliveries <= 6 + 4, `claims beyond the six calls: the first claim's two, and few more (${run.deliveries} claims in all)`)
  t.equal(crm.calls.length - before, 6, 'every call was made once')
  t.equal(maxOpen, LIMIT, `never more than ${LIMIT} calls open at the target's host, and the limit was used`)
  const attempts = await rt.db.selectFrom('deliveries').select('attempt_count').where('service_id', 'is', null).where('status', '=', 'succeeded').execute()
  t.ok(attempts.every((a) => a.attempt_count === 1), 'waiting for a slot used no attempt')
})

for (const queuedBefore of [false, true]) {
  const which = queuedBefore ? ', its deliveries queued before they had a host (migration 0022)' : ''
  t.test(`a worker claims no more for a free target's full host than its line has places for${which}`, async (t) => {
    // Two calls at a time may be at the target's host, and two wait there; the worker has room for eight.
    const scheduler = hostLimitedScheduler(t, rt, { perHostConcurrency: 2, concurrency: 8 })
    crm.always(async () => {
      await new Promise((resolve) => setTimeout(resolve, 100))
      return { status: 200, body: 'ok' }
    })
    t.teardown(() => crm.always({ status: 200, body: 'ok' }))
    const templateId = await rt.template([{ kind: 'webhook', name: 'One target, a backlog', target: target('/hooks/backlog', 'query') }])
    const started: string[] = []
    for (let i = 0; i < 16; i++) started.push((await rt.start(templateId)).id)
    if (queuedBefore) await sql`update deliveries set target_host = null where instance_id = any(${started}::uuid[])`.execute(rt.db)
    const dueAt = rt.clock.now().getTime()
    rt.clock.advance(1000)
    const before = crm.calls.length

    const run = await scheduler.runOnce()
    t.equal(crm.calls.length - before, 16, 'every delivery was called once')
    // The first claim (eight) finds the host full only once it asks: two call, two wait, four go back.
    // Every later claim leaves the target out while its host is full, or takes no more than the line's
    // places (a line that emptied while its slots lingered idle may take up to four more at once). A
    // delivery without a host cannot be left out until the first time it goes back, which gives it one.
    // Without leaving it out: 245 claims.
    const bound = 16 + 8 + (queuedBefore ? 16 : 0)
    t.ok(run.deliveries <= bound, `claims beyond the sixteen calls: the first claim's four, and few more (${run.deliveries} claims in all)`)
    const { rows: deliveries } = await sql<{ fence: number; due: Date; host: string | null }>`
      select d.fence, d.next_attempt_at as due, d.target_host as host from deliveries d where d.instance_id = any(${started}::uuid[])`.execute(rt.db)
    t.equal(deliveries.reduce((sum, row) => sum + row.fence, 0), run.deliveries, 'each claim raised a fence')
    t.ok(deliveries.every((row) => row.due.getTime() === dueAt), 'a call turned away went back at its place, not behind what was due')
    const turnedAway = deliveries.filter((row) => row.fence > 1)
    t.ok(turnedAway.length > 0 && turnedAway.every((row) => row.host === hostKey(crm.url)), 'a delivery that went back has its host')
  })
}

t.test('a claim for some services and hosts\' free targets only, and one that leaves them out', async (t) => {
  const host = hostKey(crm.url)!
  // The same server by another name: another host to the per-host limit.
  const elsewhere = { url: `http://localhost:${new URL(crm.url).port}/hooks/other`, secret: crm.secret, delivery: 'query' as const }
  const free = await rt.start(await rt.template([{ kind: 'webhook', name: 'Free and due', target: target('/hooks/due', 'query') }]))
  const other = await rt.start(await rt.template([{ kind: 'webhook', name: 'Free elsewhere and due', target: elsewhere }]))
  const served = await rt.start(await rt.template([{ kind: 'webhook', name: 'Served and due' }]))
  const deliveryOf = (instance: { steps: { delivery: { id: string } }[] }) => instance.steps[0]!.delivery.id
  const { rows: hosts } = await sql<{ id: string; target_host: string | null }>`select id, target_host from deliveries
    where id = any(${[free, other, served].map(deliveryOf)}::uuid[])`.execute(rt.db)
  t.same(Object.fromEntries(hosts.map((d) => [d.id, d.target_host])),
    { [deliveryOf(free)]: host, [deliveryOf(other)]: `localhost:${new URL(crm.url).port}`, [deliveryOf(served)]: null },
    'a free target\'s delivery keeps its host; a service\'s none')
  const claim = async (options: Omit<ClaimOptions, 'workerId' | 'now' | 'leaseMs' | 'limit'>) => {
    const claimed = await claimDeliveries(rt.db, { workerId: 'worker-split', now: rt.clock.now(), leaseMs: 1000, limit: 10, ...options })
    await releaseDeliveries(claimed)
    return claimed.map((c) => c.id).sort()
  }
  const sorted = (...ids: string[]) => ids.sort()
  t.same(await claim({ only: { services: [rt.serviceId], hosts: [] } }), [deliveryOf(served)], 'only the service\'s delivery')
  t.same(await claim({ only: { services: [], hosts: [host] } }), [deliveryOf(free)], 'only the free target\'s at that host')
  t.same(await claim({ only: { services: [rt.serviceId], hosts: [host] } }), sorted(deliveryOf(served), deliveryOf(free)), 'both')
  t.same(await claim({ skipServices: [rt.serviceId] }), sorted(deliveryOf(free), deliveryOf(other)), 'all but the service\'s: the free targets\'')
  t.same(await claim({ skipHosts: [host] }), sorted(deliveryOf(served), deliveryOf(other)), 'all but the free target\'s at that host')
  t.same(await claim({ skipServices: [rt.serviceId], skipHosts: [host, 'nowhere.example:443'] }), [deliveryOf(other)], 'both left out')
  await rt.scheduler.runOnce()
})

t.test('a target host name that resolves to a private address reads as one that does not resolve: both are retried', async (t) => {
  const guarded = createHttpClient({ maxBodyBytes: 65_536, maxSockets: 4, userAgent: 'Baton/test', allowPrivateNetworks: false })
  t.teardown(() => guarded.close())
  const port = new URL(crm.url).port
  // localhost resolves to loopback; a name under .invalid never resolves (RFC 6761).
  const urls = { loopback: `http://localhost:${port}/hooks/by-name`, missing: `http://baton-test.invalid:${port}/hooks/by-name` }
  const loopback = await rt.start(await rt.template([{ kind: 'webhook', name: 'Sneaky target', target: { url: urls.loopback, secret: crm.secret, delivery: 'query' } }]))
  const missing = await rt.start(await rt.template([{ kind: 'webhook', name: 'Probing target', target: { url: urls.missing, secret: crm.secret, delivery: 'query' } }]))
  const before = crm.calls.length
  const logged: { deliveryId?: string }[] = []
  const log = { info: (line: object) => logged.push(line), warn: (line: object) => logged.push(line), error() {} }
  await rt.newScheduler({}, log, { http: guarded }).runOnce()
  t.equal(crm.calls.length, before, 'no call reached the target')
  const seen = []
  for (const [instance, host] of [[loopback, 'localhost'], [missing, 'baton-test.invalid']] as const) {
    const delivery = (await rt.api.get(`/v1/deliveries/${instance.steps[0].delivery.id}`)).data
    t.match(delivery, { serviceId: null, status: 'pending', attemptCount: 1, lastStatusCode: null }, `${host}: retried with backoff, as DNS may change`)
    t.equal(delivery.attempts.length, 1)
    t.match(delivery.attempts[0], { outcome: 'retry', statusCode: null })
    t.equal(delivery.attempts[0].error,
      `ERR_TARGET_NO_ADDRESS: target host ${host} has no address Baton may call (it does not resolve, or only to private or reserved addresses)`)
    t.equal((await rt.instance(instance.id)).steps[0].state, 'due', `${host}: the step waits for the retry`)
    seen.push(JSON.stringify({ ...delivery.attempts[0], error: delivery.attempts[0].error.replace(host, 'NAME'), id: undefined, startedAt: undefined, durationMs: undefined }))
    seen.push(delivery.lastError.replace(host, 'NAME'))
  }
  // What the tenant reads tells the two apart in nothing: its host names must not map Baton's network (a DNS oracle).
  t.equal(seen[0], seen[2], 'the same attempt but for the name')
  t.equal(seen[1], seen[3], 'the same last error but for the name')
  t.notMatch(JSON.stringify(seen), /127\.0\.0\.1|::1|loopback|ENOTFOUND|EAI_AGAIN|getaddrinfo/, 'neither the address, its range, nor the lookup\'s error')
  const lineOf = (instance: typeof loopback) => logged.find((line) => line.deliveryId === instance.steps[0].delivery.id)
  t.match(lineOf(loopback), { outcome: 'retry', resolved: /^(127\.0\.0\.1|::1), which is a loopback address$/ }, 'the operator\'s log has the address')
  t.match(lineOf(missing), { outcome: 'retry', resolved: /^no address \(getaddrinfo (ENOTFOUND|EAI_AGAIN) baton-test\.invalid\)$/ }, 'and that the name did not resolve')
})

t.test('the operator\'s allowed private targets are for marketplace services: a free target gets none of them', async (t) => {
  const listed = createHttpClient({
    maxBodyBytes: 65_536, maxSockets: 4, userAgent: 'Baton/test', allowPrivateNetworks: false, allowedTargets: parseAllowedTargets('127.0.0.0/8, ::1/128, localhost')
  })
  t.teardown(() => listed.close())
  const url = `http://localhost:${new URL(crm.url).port}/hooks/allowed-for-providers`
  const templateId = await rt.template([
    { kind: 'webhook', name: 'The provider, allowed', refersTo: { property: true } },
    { kind: 'webhook', name: 'The tenant\'s own, not', target: { url, secret: crm.secret, delivery: 'query' } }
  ])
  const started = await rt.start(templateId)
  const before = crm.calls.length
  const scheduler = rt.newScheduler({}, undefined, { http: listed })
  await scheduler.runOnce()
  t.equal((await rt.instance(started.id)).steps[0].state, 'done', 'the service on 127.0.0.1 is called: the operator listed it')
  await scheduler.runOnce()
  t.equal(crm.calls.length, before, 'no call reached the free target')
  const delivery = (await rt.api.get(`/v1/deliveries/${(await rt.instance(started.id)).steps[1].delivery.id}`)).data
  t.match(delivery.attempts, [{ outcome: 'retry', statusCode: null, error: /^ERR_TARGET_NO_ADDRESS: target host localhost has no address Baton may call/ }])
})
