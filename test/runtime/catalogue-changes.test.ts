import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { setupRuntime } from '../helpers/runtime.js'

// What a call sends when the operator changes the catalogue after the steps calling it were saved.
const rt = await setupRuntime(t)

t.test('a parameter added with a default after a step was saved reaches that step\'s calls', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Ask ValueCo', refersTo: { property: true }, parameters: { mode: 'quick' } }])
  // Allowed while the step does not pass it, since it has a default (README: The API in brief).
  const added = await rt.operator.post(`/v1/marketplace-services/${rt.serviceId}/parameters`,
    { name: 'format', type: 'enum', allowedValues: ['pdf', 'html'], required: true, default: 'pdf' })
  t.equal(added.statusCode, 201, added.body)
  t.teardown(() => rt.operator.delete(`/v1/marketplace-services/${rt.serviceId}/parameters/${added.data.id}`))
  const instance = await rt.start(templateId)
  await rt.scheduler.runOnce()
  const call = rt.provider.calls.find((c) => c.query.processId === instance.id)
  t.ok(call?.signatureValid, 'the call verifies')
  t.match(call?.query, { mode: 'quick', format: 'pdf' }, 'the step\'s value, and the default of the parameter it does not pass')
})

t.test('a step saved before a required parameter with a default was added can still be edited, and its template activated again', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Ask ValueCo', refersTo: { property: true }, parameters: { mode: 'quick' } }])
  const added = await rt.operator.post(`/v1/marketplace-services/${rt.serviceId}/parameters`,
    { name: 'language', type: 'enum', allowedValues: ['de', 'en'], required: true, default: 'de' })
  t.equal(added.statusCode, 201, added.body)
  t.teardown(() => rt.operator.delete(`/v1/marketplace-services/${rt.serviceId}/parameters/${added.data.id}`))
  const [step] = (await rt.api.get(`/v1/process-templates/${templateId}/steps`)).data.items
  const edited = await rt.api.patch(`/v1/process-templates/${templateId}/steps/${step.id}`, { name: 'Ask ValueCo again' })
  t.equal(edited.statusCode, 200, edited.body)
  t.match(edited.data.parameters, { mode: 'quick', language: 'de' }, 'the default applies, as it does to the step\'s calls')

  // Before the edit saved the default, a deactivated template with such a step came back too.
  const later = await rt.operator.post(`/v1/marketplace-services/${rt.serviceId}/parameters`,
    { name: 'currency', type: 'enum', allowedValues: ['EUR', 'CHF'], required: true, default: 'EUR' })
  t.equal(later.statusCode, 201, later.body)
  t.teardown(() => rt.operator.delete(`/v1/marketplace-services/${rt.serviceId}/parameters/${later.data.id}`))
  t.equal((await rt.api.patch(`/v1/process-templates/${templateId}`, { active: false })).statusCode, 200)
  const again = await rt.api.patch(`/v1/process-templates/${templateId}`, { active: true })
  t.equal(again.statusCode, 200, again.body)

  const replaced = await rt.api.patch(`/v1/process-templates/${templateId}/steps/${step.id}`, { parameters: { mode: 'full' } })
  t.equal(replaced.statusCode, 422, 'parameters the edit gives anew must still name a required one the step had')
  t.match(replaced.data.errors, [{ pointer: '/body/parameters/language', detail: 'is required by the service' }])
})

t.test('a running process whose step still to call the service lacks a parameter, or passes it, holds it as a template step does (409 naming the process)', async (t) => {
  // A service of its own: the tests above leave parameters on the fixture's.
  const service = (await rt.operator.post('/v1/marketplace-services', { name: 'Survey', provider: 'ValueCo', webhookUrl: `${rt.provider.url}/hooks/survey` })).data
  const base = `/v1/marketplace-services/${service.id}/parameters`
  t.equal((await rt.operator.post(base, { name: 'mode', type: 'enum', allowedValues: ['quick', 'full'] })).statusCode, 201)
  t.equal((await rt.api.put(`/v1/marketplace-services/${service.id}/activation`)).statusCode, 200)
  const templateId = await rt.template([
    { kind: 'task', name: 'Prepare' },
    { kind: 'webhook', name: 'Ask ValueCo', refersTo: { property: true }, serviceId: service.id, parameters: { mode: 'quick' } }
  ])
  const instance = await rt.start(templateId)
  // The template's step goes (the process keeps its copy): no template step calls the service any more.
  const [, step] = (await rt.api.get(`/v1/process-templates/${templateId}/steps`)).data.items
  t.equal((await rt.api.delete(`/v1/process-templates/${templateId}/steps/${step.id}`)).statusCode, 204)

  const required = await rt.operator.post(base, { name: 'region', type: 'string', required: true })
  t.equal(required.statusCode, 409, 'the process\'s call would go out without it')
  t.match(required.data?.detail, new RegExp(`"region" cannot be required without a default: steps of process instance ${instance.id}`))
  const mode = (await rt.operator.get(base)).data.items.find((p: { name: string }) => p.name === 'mode')
  const narrowed = await rt.operator.patch(`${base}/${mode.id}`, { allowedValues: ['full'] })
  t.equal(narrowed.statusCode, 409, 'the process\'s call passes "quick"')
  t.match(narrowed.data?.detail, new RegExp(`"mode" is passed by steps of process instance ${instance.id}.*removing the allowed values "quick"`))

  t.equal((await rt.api.post(`/v1/process-instances/${instance.id}/advance`, { outcome: 'done' })).statusCode, 200)
  await rt.scheduler.runOnce()
  const call = rt.provider.calls.find((c) => c.query.processId === instance.id)
  t.match(call?.query, { mode: 'quick' }, 'the call goes out as the process\'s step says')
  t.equal((await rt.instance(instance.id)).status, 'completed')

  // Its call made, the process holds nothing.
  const added = await rt.operator.post(base, { name: 'region', type: 'string', required: true })
  t.equal(added.statusCode, 201, added.body)
  t.equal((await rt.operator.delete(`${base}/${added.data.id}`)).statusCode, 204)
})

t.test('a call queued before the service\'s parameters changed goes out with them as they are when it is made', async (t) => {
  // A service of its own, as above. Its "scale" comes after the step was saved: the step does not pass it,
  // and the processes' calls carry its default, filled in when their steps started.
  const service = (await rt.operator.post('/v1/marketplace-services', { name: 'Energy pass', provider: 'ValueCo', webhookUrl: `${rt.provider.url}/hooks/pass` })).data
  const base = `/v1/marketplace-services/${service.id}/parameters`
  t.equal((await rt.api.put(`/v1/marketplace-services/${service.id}/activation`)).statusCode, 200)
  const templateId = await rt.template([{ kind: 'webhook', name: 'Order the pass', refersTo: { property: true }, serviceId: service.id }])
  const scale = (await rt.operator.post(base, { name: 'scale', type: 'integer', default: 2 })).data
  const queued = await rt.start(templateId)
  const retrying = await rt.start(templateId)
  rt.provider.queue((call) => ({ status: call.query.processId === retrying.id ? 503 : 200 }))
  // The retrying one's first attempt fails before the change; the queued one has not been called yet.
  await sql`update deliveries set next_attempt_at = next_attempt_at + interval '1 hour' where id = ${queued.steps[0].delivery.id}`.execute(rt.db)
  await rt.scheduler.runOnce()
  t.equal((await rt.instance(retrying.id)).steps[0].delivery.attempts, 1, 'the first attempt failed')

  // Required, with a default: allowed, and those steps' calls carry the default (README: The API in brief).
  const region = await rt.operator.post(base, { name: 'region', type: 'string', required: true, default: 'north' })
  t.equal(region.statusCode, 201, region.body)
  // No step passes "scale": it goes, and no call carries it any more.
  t.equal((await rt.operator.delete(`${base}/${scale.id}`)).statusCode, 204)

  rt.clock.advance(2 * 60 * 60_000)
  await rt.scheduler.runOnce()
  for (const [name, instance] of [['queued', queued], ['retried', retrying]] as const) {
    const calls = rt.provider.calls.filter((c) => c.query.processId === instance.id)
    const last = calls.at(-1)
    t.equal(last?.query.region, 'north', `the ${name} call carries the new required parameter's default`)
    t.equal(last?.query.scale, undefined, `the ${name} call no longer carries the deleted parameter`)
    t.equal((await rt.instance(instance.id)).status, 'completed')
  }
})
