import { randomBytes } from 'node:crypto'
import { Webhook } from 'standardwebhooks'
import t from 'tap'
import { captureRealCalls, type CapturedCall } from './real-calls.js'

// A provider using the Standard Webhooks reference library verifies Baton's json calls with the
// secret exactly as Baton handed it out, with no Baton-specific code.
const { json } = await captureRealCalls(t)

const verify = (secret: string, call: CapturedCall) => new Webhook(secret).verify(call.body, call.headers)

t.test('real json calls verify and give back their body', async (t) => {
  for (const [what, call] of [['a step call', json.step], ['a trigger call', json.trigger]] as const) {
    t.same(verify(json.previousSecret, call), JSON.parse(call.body), what)
  }
  t.match(verify(json.previousSecret, json.step), { parameters: { list: 'Käufer Köln', doubleOptIn: true } }, 'parameters keep their types')
})

t.test('during a rotation either secret verifies', async (t) => {
  t.ok(verify(json.secret, json.duringRotation), 'the new secret')
  t.ok(verify(json.previousSecret, json.duringRotation), 'the old secret')
})

t.test('tampered, stale or wrongly keyed calls are refused', async (t) => {
  const noMatch = { message: 'No matching signature found' }
  const refused: [string, () => unknown, { message: string }][] = [
    ['a changed body', () => verify(json.previousSecret, { ...json.step, body: json.step.body.replace('Käufer Köln', 'Käufer Bonn') }), noMatch],
    ['another webhook-id', () => verify(json.previousSecret, { ...json.trigger, headers: { ...json.trigger.headers, 'webhook-id': 'another' } }), noMatch],
    ['another secret', () => verify(`whsec_${randomBytes(32).toString('base64')}`, json.trigger), noMatch],
    ['a call signed ten minutes ago', () => verify(json.previousSecret, json.stale), { message: 'Message timestamp too old' }]
  ]
  for (const [what, attempt, error] of refused) t.throws(attempt, error, what)
})
