import { randomBytes } from 'node:crypto'
import type { Test } from 'tap'
import { TestProvider, type ReceivedCall } from '../helpers/provider.js'
import { setupRuntime, type RuntimeContext } from '../helpers/runtime.js'

/** A call as a provider received it: enough to replay it byte for byte. */
export interface CapturedCall {
  method: string
  url: string
  headers: Record<string, string>
  body: string
}

export interface RealCalls {
  rt: RuntimeContext
  propertyId: string
  query: { step: CapturedCall; trigger: CapturedCall; afterRotation: CapturedCall; secret: string; previousSecret: string }
  json: { step: CapturedCall; trigger: CapturedCall; duringRotation: CapturedCall; stale: CapturedCall; secret: string; previousSecret: string }
}

function captured(call: ReceivedCall | undefined): CapturedCall {
  if (!call) throw new Error('the provider was not called')
  const headers = Object.fromEntries(Object.entries(call.headers).map(([name, value]) => [name, Array.isArray(value) ? value.join(', ') : String(value)]))
  return { method: call.method, url: call.url, headers, body: call.body }
}

/**
 * Real calls from Baton's scheduler to two providers on loopback: the valuation service (query, with a
 * query parameter in its webhook URL) and a newsletter service (json); step calls with awkward
 * characters, trigger calls, calls during a secret rotation, and a json call whose timestamp is stale.
 */
export async function captureRealCalls(t: Test): Promise<RealCalls> {
  const rt = await setupRuntime(t)
  rt.clock.set(new Date())
  const newsletter = await TestProvider.start()
  t.teardown(() => newsletter.close())
  const op = rt.operator
  const created = await op.post('/v1/marketplace-services', { name: 'Newsletter sync', provider: 'ListCo', webhookUrl: `${newsletter.url}/hooks/newsletter`, delivery: 'json' })
  const jsonId: string = created.data.id
  await op.post(`/v1/marketplace-services/${jsonId}/parameters`, { name: 'list', label: 'List', type: 'string', required: true })
  await op.post(`/v1/marketplace-services/${jsonId}/parameters`, { name: 'doubleOptIn', label: 'Double opt-in', type: 'boolean', required: false, default: true })
  await op.post(`/v1/marketplace-services/${rt.serviceId}/parameters`, { name: 'note', label: 'Note', type: 'string', required: false })
  await op.post(`/v1/marketplace-services/${rt.serviceId}/triggers`, { module: 'property', events: ['update'], fields: ['price', 'livingArea'] })
  await op.post(`/v1/marketplace-services/${jsonId}/triggers`, { module: 'property', events: ['update'], fields: ['marketValue'] })
  await rt.api.put(`/v1/marketplace-services/${jsonId}/activation`)

  const refersTo = { property: true, address: false }
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Value it', refersTo, parameters: { mode: 'quick', note: 'Grüße & Co. ~ 100% a+b=c/d?' } },
    { kind: 'webhook', name: 'Tell the list', refersTo, serviceId: jsonId, parameters: { list: 'Käufer Köln' } }
  ])
  await rt.start(templateId)
  await drain(rt, () => rt.provider.calls.length > 0 && newsletter.calls.length > 0)
  const step = { query: captured(rt.provider.calls[0]), json: captured(newsletter.calls[0]) }

  const change = async (fields: Record<string, unknown>, provider: TestProvider) => {
    const before = provider.calls.length
    const answer = await rt.api.patch(`/v1/properties/${rt.propertyId}`, { fields })
    if (answer.statusCode !== 200) throw new Error(answer.body)
    await drain(rt, () => provider.calls.length > before)
    return captured(provider.calls.at(-1))
  }
  const queryTrigger = await change({ price: 475000, livingArea: 96 }, rt.provider)
  const jsonTrigger = await change({ marketValue: 504000 }, newsletter)

  rt.clock.advance(-10 * 60_000)
  const stale = await change({ marketValue: 505000 }, newsletter)
  rt.clock.set(new Date())

  const jsonSecret = await rotate(rt, jsonId)
  const duringRotation = await change({ marketValue: 506000 }, newsletter)
  const querySecret = await rotate(rt, rt.serviceId)
  const afterRotation = await change({ price: 480000 }, rt.provider)

  return {
    rt,
    propertyId: rt.propertyId,
    query: { step: step.query, trigger: queryTrigger, afterRotation, secret: querySecret, previousSecret: rt.secret },
    json: { step: step.json, trigger: jsonTrigger, duringRotation, stale, secret: jsonSecret, previousSecret: created.data.secret }
  }
}

async function drain(rt: RuntimeContext, done: () => boolean): Promise<void> {
  for (let pass = 0; pass < 10 && !done(); pass++) await rt.scheduler.runOnce()
  if (!done()) throw new Error('no call arrived')
}

/** The operator sets a new secret, as a provider rotating its secret would ask; the old one stays valid for a while. */
async function rotate(rt: RuntimeContext, serviceId: string): Promise<string> {
  const secret = `whsec_${randomBytes(32).toString('base64')}`
  const current = await rt.operator.get(`/v1/marketplace-services/${serviceId}`)
  const rotated = await rt.operator.patch(`/v1/marketplace-services/${serviceId}`, { secret }, { 'if-match': `"${current.data.version}"` })
  if (rotated.statusCode !== 200) throw new Error(rotated.body)
  return secret
}
