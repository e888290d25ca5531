import t from 'tap'
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
