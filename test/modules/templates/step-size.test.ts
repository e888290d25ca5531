import { randomBytes } from 'node:crypto'
import t from 'tap'
import { setupApp } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { createTemplate } from './fixtures.js'

// A step took up to a 1 MiB body of parameters (or writeValues, or a condition), and a template 1,000
// steps: 100 such steps made a 98 MiB template whose GET took 3.8 s, whose process start 10.2 s (at the
// statement timeout) and whose calls took the worker to 1.4 GB; at 1,000 a template's answer passes what
// a JavaScript string can hold. A step's settings now take at most 16 KiB as JSON.
const STEP_SETTINGS_MAX_BYTES = 16 * 1024
const TARGET = { url: 'https://crm.muster.example/hooks/baton', secret: `whsec_${randomBytes(32).toString('base64')}`, delivery: 'json' }

/** Parameters of exactly `bytes` bytes as JSON. */
function parametersOf(bytes: number): Record<string, string> {
  const filler = bytes - JSON.stringify({ text: '' }).length
  return { text: 'x'.repeat(filler) }
}

t.test('a step\'s settings take at most 16 KiB as JSON: the largest is saved, one byte more is 422 naming the field', async (t) => {
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client)
  const steps = `/v1/process-templates/${id}/steps`

  const largest = await client.post(steps, { kind: 'webhook', name: 'Tell our CRM', target: TARGET, parameters: parametersOf(STEP_SETTINGS_MAX_BYTES) })
  t.equal(largest.statusCode, 201, largest.body.slice(0, 300))

  const over = await client.post(steps, { kind: 'webhook', name: 'Tell our CRM', target: TARGET, parameters: parametersOf(STEP_SETTINGS_MAX_BYTES + 1) })
  assertProblem(t, over, 422, /16384/)
  t.same(over.data.errors, [{ pointer: '/body/parameters', detail: `${STEP_SETTINGS_MAX_BYTES + 1} bytes as JSON, more than ${STEP_SETTINGS_MAX_BYTES}` }])

  const patched = await client.patch(`${steps}/${largest.data.id}`, { parameters: parametersOf(STEP_SETTINGS_MAX_BYTES + 1) })
  assertProblem(t, patched, 422)
  t.same(patched.data.errors.map((e: { pointer: string }) => e.pointer), ['/body/parameters'], 'an edit too')

  const text = { literal: 'w'.repeat(2000) }
  const values = Array.from({ length: 9 }, (_, i) => ({ record: 'property', field: `note${i}`, value: text }))
  const writes = await client.post(steps, { kind: 'writeValues', name: 'Note it', refersTo: { property: true }, writeValues: { values } })
  assertProblem(t, writes, 422)
  t.same(writes.data.errors.map((e: { pointer: string }) => e.pointer), ['/body/writeValues'])

  const condition = { or: Array.from({ length: 9 }, () => ({ eq: [{ field: 'property.note' }, 'c'.repeat(2000)] })) }
  const decision = await client.post(steps, { kind: 'decision', name: 'Noted?', refersTo: { property: true }, decision: { mode: 'automatic', condition, yes: null, no: null } })
  assertProblem(t, decision, 422)
  t.same(decision.data.errors.map((e: { pointer: string }) => e.pointer), ['/body/decision'])

  t.equal((await client.get(`/v1/process-templates/${id}`)).data.steps.length, 1, 'nothing over the limit was saved')
})
