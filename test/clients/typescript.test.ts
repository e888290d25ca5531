import type { AddressInfo } from 'node:net'
import t from 'tap'
import {
  createBatonClient, idempotencyKey, ifMatch, ifNoneMatch, isReplay, versionOf, type BatonClient, type DeliveryStatus, type StepState
} from '../../clients/typescript/src/index.js'
import { setupRuntime } from '../helpers/runtime.js'

/** Compiles only while the document types a step's state as its eight values. */
function isOpen(state: StepState): boolean {
  switch (state) {
    case 'pending': case 'waiting': case 'due': case 'running': case 'failed': return true
    case 'done': case 'skipped': case 'cancelled': return false
    default: return state satisfies never
  }
}

const retried = (status: DeliveryStatus) => status === 'pending'

// The README's tour, step for step, through the generated client against Baton listening on loopback.
t.test('the README tour runs through the typed client', async (t) => {
  const rt = await setupRuntime(t)
  await rt.app.listen({ port: 0, host: '127.0.0.1' })
  const baseUrl = `http://127.0.0.1:${(rt.app.server.address() as AddressInfo).port}`
  const operator = createBatonClient({ baseUrl, apiKey: rt.operatorKey })
  // ValueCo is down throughout, as valueco.example is in the README: its calls are retried.
  rt.provider.always({ status: 503, body: 'down for maintenance' })

  // 1. A tenant and its API key.
  const tenant = await operator.POST('/v1/tenants', { body: { name: 'Muster Immobilien GmbH', webId: '48213', timeZone: 'Europe/Berlin' } })
  t.equal(tenant.response.status, 201, JSON.stringify(tenant.error))
  t.equal(tenant.response.headers.get('location'), `/v1/tenants/${tenant.data!.id}`, 'a created resource says where it lives')
  const apiKey = await operator.POST('/v1/tenants/{id}/api-keys', { params: { path: { id: tenant.data!.id } }, body: { name: 'crm' } })
  const baton: BatonClient = createBatonClient({ baseUrl, apiKey: apiKey.data!.key })

  // 2. A user.
  const user = (await baton.POST('/v1/users', { body: { name: 'Anna Berg', email: 'anna@example.com' } })).data!

  // 3. A marketplace service with a parameter; its secret is shown this once.
  const service = (await operator.POST('/v1/marketplace-services', {
    body: { name: 'Valuation', provider: 'ValueCo', webhookUrl: `${rt.provider.url}/hooks/valuation` }
  })).data!
  t.match(service.secret, /\S{20,}/, 'the signing secret')
  const parameter = await operator.POST('/v1/marketplace-services/{id}/parameters', {
    params: { path: { id: service.id } },
    body: { name: 'mode', label: 'Mode', type: 'enum', allowedValues: ['quick', 'full'], required: false, default: 'full' }
  })
  t.same(parameter.data?.allowedValues, ['quick', 'full'])

  // 4. The tenant activates it.
  t.equal((await baton.PUT('/v1/marketplace-services/{id}/activation', { params: { path: { id: service.id } } })).data?.activated, true)

  // 5. A template: a webhook step, then a task two days later with a deadline.
  const template = (await baton.POST('/v1/process-templates', { body: { name: 'Re-value a property', controllerUserId: user.id } })).data!
  const steps = `/v1/process-templates/{id}/steps` as const
  const webhook = await baton.POST(steps, {
    params: { path: { id: template.id } },
    body: {
      kind: 'webhook', name: 'Ask ValueCo for a valuation', start: { mode: 'afterPrevious' }, responsibility: 'propertyMaintainer',
      refersTo: { property: true, address: false }, serviceId: service.id, parameters: { mode: 'quick' }
    }
  })
  t.same(webhook.data?.parameters, { mode: 'quick' })
  await baton.POST(steps, {
    params: { path: { id: template.id } },
    body: {
      kind: 'task', name: 'Call the owner with the value', start: { mode: 'daysAfterPrevious', days: 2 },
      responsibility: { user: user.id }, deadlineDays: 1, refersTo: { property: true, address: false }
    }
  })

  // The README's error example: a problem pointing at the field.
  const bad = await baton.POST(steps, {
    params: { path: { id: template.id } },
    body: { kind: 'webhook', name: 'Bad', start: { mode: 'afterPrevious' }, responsibility: 'processResponsible', serviceId: service.id, parameters: { mode: 'slow' } }
  })
  t.equal(bad.error?.status, 422)
  t.equal(bad.error?.errors?.[0]?.pointer, '/body/parameters/mode')

  // 6. Activate it. The version the create answered is stale by now (each step added one): the 412 carries the current ETag.
  const path = { id: template.id }
  const stale = await baton.PATCH('/v1/process-templates/{id}', { params: { path, header: ifMatch(template.version) }, body: { active: true } })
  t.equal(stale.response.status, 412)
  const current = versionOf(stale.response)
  t.ok(current !== undefined && current > template.version, `the 412 names the current version (${current})`)
  const activated = await baton.PATCH('/v1/process-templates/{id}', { params: { path, header: ifMatch(current!) }, body: { active: true } })
  t.equal(activated.data?.active, true)
  t.equal(versionOf(activated.response), activated.data?.version, 'ETag is the version')
  t.same(activated.data?.steps.map((s) => [s.position, s.kind, s.name]), [[1, 'webhook', 'Ask ValueCo for a valuation'], [2, 'task', 'Call the owner with the value']])

  // 7. A property.
  const property = (await baton.POST('/v1/properties', { body: { maintainerUserId: user.id, fields: { price: 450000, livingArea: 96 } } })).data!

  // 8. Start the process; a retry with the same Idempotency-Key answers the same process.
  const start = { body: { templateId: template.id, responsibleUserId: user.id, propertyId: property.id }, params: { header: idempotencyKey('tour-1') } }
  const started = await baton.POST('/v1/process-instances', start)
  t.equal(started.response.status, 201)
  t.equal(started.response.headers.get('location'), `/v1/process-instances/${started.data?.id}`)
  t.equal(versionOf(started.response), started.data?.version)
  t.notOk(isReplay(started.response))
  const again = await baton.POST('/v1/process-instances', start)
  t.equal(again.response.status, 200)
  t.ok(isReplay(again.response), 'Idempotent-Replayed says so')
  t.equal(again.data?.id, started.data?.id, 'no second process')
  const instanceId = started.data!.id

  // 9. The scheduler calls ValueCo, which is down: the step stays due and its delivery is retried.
  await rt.scheduler.runOnce()
  const read = await baton.GET('/v1/process-instances/{id}', { params: { path: { id: instanceId } } })
  const watched = read.data!
  t.equal(versionOf(read.response), watched.version, 'a read answers with the ETag it declares')
  // Its next attempt is due in seconds, when a worker's claim would change it without a new version.
  const dueSoon = await baton.GET('/v1/process-instances/{id}', { params: { path: { id: instanceId }, header: ifNoneMatch(watched.version) } })
  t.equal(dueSoon.response.status, 200, 'polled while a call is due: answered in full')
  t.equal(dueSoon.data?.version, watched.version)
  const first = watched.steps[0]!
  t.equal(first.state, 'due')
  t.ok(isOpen(first.state))
  t.equal(first.assigneeUserId, user.id, 'the property maintainer')
  t.ok(first.delivery && retried(first.delivery.status), 'the delivery waits for its next attempt')
  t.equal(watched.steps[1]?.start.mode, 'daysAfterPrevious')

  // 10. The attempt log.
  const log = (await baton.GET('/v1/deliveries', { params: { query: { instanceId } } })).data!
  t.same(log.items[0]?.attempts.map((a) => [a.outcome, a.statusCode]), [['retry', 503]])
  t.equal(rt.provider.calls.length, 1, 'ValueCo was called once')

  // 11. Skip the webhook step, then the waiting task: the process completes.
  const advance = (outcome: 'done' | 'skipped', note?: string) => baton.POST('/v1/process-instances/{id}/advance', {
    params: { path: { id: instanceId } }, body: { outcome, ...(note === undefined ? {} : { note }) }
  })
  const skipped = (await advance('skipped', 'Valued by hand')).data!
  t.same(skipped.steps.map((s) => s.state), ['skipped', 'waiting'])
  // Nothing is due now: polled with the version it holds, it is not sent again.
  const poll = (header: ReturnType<typeof ifNoneMatch>) => baton.GET('/v1/process-instances/{id}', { params: { path: { id: instanceId }, header } })
  const unchanged = await poll(ifNoneMatch(skipped.version))
  t.equal(unchanged.response.status, 304, 'polled with the version it holds: not modified')
  t.equal(unchanged.data, undefined, 'and no body')
  const etag = unchanged.response.headers.get('etag')!
  t.equal((await poll(ifNoneMatch(etag))).response.status, 304, 'or the ETag')
  t.equal((await poll(ifNoneMatch(watched.version))).data?.version, skipped.version, 'an older version gets the process')
  const completed = (await advance('skipped')).data!
  t.equal(completed.status, 'completed')
  t.not(completed.endedAt, null)

  // 12. The property's activity log tells the story.
  const activities = (await baton.GET('/v1/properties/{id}/activities', { params: { path: { id: property.id } } })).data!
  const messages = activities.items.map((a) => a.message).join('\n')
  t.match(messages, /Step "Ask ValueCo for a valuation" skipped/)
  t.match(messages, /Process "Re-value a property" completed/)
})

t.test('the client sends its key, and a wrong one gets a typed problem', async (t) => {
  const rt = await setupRuntime(t)
  await rt.app.listen({ port: 0, host: '127.0.0.1' })
  const baseUrl = `http://127.0.0.1:${(rt.app.server.address() as AddressInfo).port}`
  const stranger = createBatonClient({ baseUrl, apiKey: 'btk_not-a-key' })
  const answer = await stranger.GET('/v1/users', {})
  t.equal(answer.response.status, 401)
  t.equal(answer.error?.title, 'Unauthorized')
  const ready = await createBatonClient({ baseUrl, apiKey: rt.operatorKey }).GET('/health/ready')
  t.equal(ready.data?.status, 'ok')
})
