import { randomBytes } from 'node:crypto'
import { Webhook } from 'standardwebhooks'
import t from 'tap'
import { captureRealCalls, type CapturedCall } from './real-calls.js'

// A provider using the Standard Webhooks reference library verifies Baton's json calls with the
// secret exactly as Baton handed it out, with no Baton-specific code.
const { json, query } = await captureRealCalls(t)

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

t.test('a json step call holds the context a query step call sends, under the same names', async (t) => {
  // Both calls come from steps of one process: the query step's own parameters (mode, note), its
  // webhook URL's (v) and its signature aside, its URL names the context the json body must hold.
  const sent = Object.fromEntries(new URL(query.step.url).searchParams)
  const context = Object.keys(sent).filter((name) => !['v', 'mode', 'note', 'signature'].includes(name)).sort()
  t.same(context, ['apiClaim', 'customerName', 'customerWebId', 'deliveryId', 'estateId', 'processId', 'stepId', 'timestamp', 'userId'])
  const body = JSON.parse(json.step.body) as Record<string, unknown>
  t.same(Object.keys(body).filter((name) => name !== 'parameters').sort(), context, 'the same context, and nothing else beside the parameters')
  for (const name of ['customerWebId', 'customerName', 'userId', 'estateId', 'processId']) t.equal(body[name], sent[name], `${name} as the query call has it`)
  t.not(body.stepId, sent.stepId, 'its own step')
  t.equal(body.deliveryId, json.step.headers['webhook-id'])
  t.equal(body.timestamp, Number(json.step.headers['webhook-timestamp']), 'Unix seconds, as a number')
  t.match(body.apiClaim, /^bcl_/)
})
