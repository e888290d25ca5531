import t from 'tap'
import { sql } from '../../../src/db/kysely.js'
import { setupApp, type Client } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'

// One app for the file: decision and writeValues steps are checked when saved, and a template's branches when it changes.
const ctx = await setupApp(t)
const client: Client = (await ctx.newTenant()).client

const task = (name: string) => ({ kind: 'task', name })
const decide = (name: string, yes: number | null, no: number | null, extra: Record<string, unknown> = {}) => ({
  kind: 'decision', name, refersTo: { property: true },
  decision: { mode: 'automatic', condition: { exists: { field: 'property.price' } }, yes, no, ...extra }
})

async function template(steps: Record<string, unknown>[]): Promise<string> {
  const created = await client.post('/v1/process-templates', { name: `Branches ${Math.random()}` })
  for (const step of steps) {
    const added = await client.post(`/v1/process-templates/${created.data.id}/steps`, step)
    if (added.statusCode !== 201) throw new Error(added.body)
  }
  return created.data.id as string
}

const stepsOf = async (id: string) => (await client.get(`/v1/process-templates/${id}`)).data.steps
const activate = async (id: string) => client.patch(`/v1/process-templates/${id}`, { active: true })

t.test('expressions are checked at save time, each error with a pointer', async (t) => {
  const id = await template([task('First')])
  const url = `/v1/process-templates/${id}/steps`
  let res = await client.post(url, { ...decide('Typed', 3, null), decision: { mode: 'automatic', condition: { gt: [{ add: ['a lot', 1] }, 'x'] }, yes: 3, no: null } })
  assertProblem(t, res, 422)
  t.same(res.data.errors, [
    { pointer: '/body/decision/condition/gt/0/add/0', detail: 'add needs numbers; this is a string' },
    { pointer: '/body/decision/condition/gt', detail: 'gt compares a number with a string' }
  ])

  res = await client.post(url, { kind: 'decision', name: 'Unlinked', decision: { mode: 'automatic', condition: { and: [{ exists: { field: 'address.email' } }, 5] }, yes: 3, no: 3 } })
  assertProblem(t, res, 422)
  t.same(res.data.errors, [
    { pointer: '/body/decision/condition/and/0/exists/field', detail: 'reads the address: the step needs refersTo.address: true' },
    { pointer: '/body/decision/condition/and/1', detail: 'must be true or false (a condition); this is a number' }
  ])

  res = await client.post(url, { ...decide('Later', 3, null), decision: { mode: 'automatic', condition: { eq: [{ step: 2, of: 'outcome' }, 'done'] }, yes: 3, no: null } })
  assertProblem(t, res, 422)
  t.same(res.data.errors, [{ pointer: '/body/decision/condition/eq/0/step', detail: 'must name an earlier step (below 2): a step reads only what came before it' }])

  res = await client.post(url, { ...decide('Number', 3, null), decision: { mode: 'automatic', condition: { divide: [1, 0] }, yes: 3, no: null } })
  assertProblem(t, res, 422)
  t.same(res.data.errors.map((e: { pointer: string }) => e.pointer), ['/body/decision/condition/divide/1', '/body/decision/condition'])

  let deep: unknown = true
  for (let i = 0; i < 14; i++) deep = { not: deep }
  res = await client.post(url, { ...decide('Deep', 3, null), decision: { mode: 'automatic', condition: deep, yes: 3, no: null } })
  assertProblem(t, res, 422, /nests deeper than 12 levels/)

  res = await client.post(url, { ...decide('Root', 3, null), decision: { mode: 'automatic', condition: { exists: { field: 'tenant.name' } }, yes: 3, no: null } })
  assertProblem(t, res, 400, /decision\/condition/)
  res = await client.post(url, { ...decide('Code', 3, null), decision: { mode: 'automatic', condition: { eval: 'process.exit()' }, yes: 3, no: null } })
  assertProblem(t, res, 400)

  res = await client.post(url, { kind: 'decision', name: 'No condition', decision: { mode: 'automatic', yes: 3, no: null } })
  assertProblem(t, res, 422)
  t.same(res.data.errors, [{ pointer: '/body/decision/condition', detail: 'an automatic decision needs a condition (or the same step for yes and no, a plain jump)' }])
  res = await client.post(url, { kind: 'decision', name: 'Without settings' })
  assertProblem(t, res, 422)
  t.same(res.data.errors, [{ pointer: '/body/decision', detail: 'a decision step needs decision: {mode, condition, yes, no}' }])
  res = await client.post(url, { ...task('Task with branches'), decision: { mode: 'manual', yes: 3, no: 3 } })
  assertProblem(t, res, 422, /a task step has no decision settings/)

  res = await client.post(url, {
    kind: 'writeValues', name: 'Write', refersTo: { property: true },
    writeValues: { values: [{ record: 'address', field: 'x', value: 1 }, { record: 'property', field: 'p', value: { subtract: [{ today: {} }, 1] } }] }
  })
  assertProblem(t, res, 422)
  t.same(res.data.errors, [
    { pointer: '/body/writeValues/values/0/record', detail: 'writes the address: the step needs refersTo.address: true' },
    { pointer: '/body/writeValues/values/1/value/subtract/0', detail: 'subtract needs numbers; this is a string' }
  ])
  t.equal((await stepsOf(id)).length, 1, 'nothing was saved')
})

t.test('a body nested past any expression is refused with a pointer before validation; a literal past a record field\'s depth at save', async (t) => {
  const id = await template([task('First')])
  const url = `/v1/process-templates/${id}/steps`
  const json = { 'content-type': 'application/json' }
  // Written as text, as an attacker sends it: Ajv's validator of the recursive expression schema overflowed on these (500).
  const nots = (levels: number) => `${'{"not":'.repeat(levels)}true${'}'.repeat(levels)}`
  const decision = (condition: string) => `{"kind":"decision","name":"Deep","refersTo":{"property":true},"decision":{"mode":"automatic","yes":null,"no":null,"condition":${condition}}}`
  const writes = (value: string) => `{"kind":"writeValues","name":"Deep","refersTo":{"property":true},"writeValues":{"values":[{"record":"property","field":"x","value":${value}}]}}`
  const adds = (levels: number) => `${'{"add":[1,'.repeat(levels)}1${']}'.repeat(levels)}`
  const lists = (levels: number) => `${'['.repeat(levels)}${']'.repeat(levels)}`
  const tooDeep = (response: Awaited<ReturnType<Client['post']>>, pointer: RegExp) => {
    assertProblem(t, response, 422, /deeper than 100 levels/)
    t.equal(response.data.errors.length, 1)
    t.match(response.data.errors[0].pointer, pointer)
  }
  for (const levels of [500, 5000]) tooDeep(await client.post(url, decision(nots(levels)), json), /^\/body\/decision\/condition(\/not)+$/)
  tooDeep(await client.post(url, writes(adds(1000)), json), /^\/body\/writeValues\/values\/0\/value(\/add\/1)+$/)
  tooDeep(await client.post(url, writes(`{"literal":${lists(5000)}}`), json), /^\/body\/writeValues\/values\/0\/value\/literal(\/0)+$/)
  const step = await client.post(url, decide('Shallow', null, null))
  tooDeep(await client.patch(`${url}/${step.data.id}`, decision(nots(500)), json), /^\/body\/decision\/condition(\/not)+$/)
  assertProblem(t, await client.post(url, decision(nots(90)), json), 422, /nests deeper than 12 levels/)

  // A literal at most as deep as a record's field can hold (31 levels, inside the fields object); deeper is 422 at the level too deep.
  const literal = async (levels: number) => client.post(url, writes(`{"literal":${lists(levels)}}`), json)
  const fits = await literal(31)
  t.equal(fits.statusCode, 201, fits.body)
  for (const levels of [32, 90]) {
    const res = await literal(levels)
    assertProblem(t, res, 422)
    t.same(res.data.errors, [{ pointer: `/body/writeValues/values/0/value/literal${'/0'.repeat(31)}`, detail: 'nests deeper than 31 levels: a record\'s field holds no deeper value' }])
  }
  const inCondition = await client.post(url, decision(`{"eq":[{"field":"property.x"},{"literal":{"a":${lists(40)}}}]}`), json)
  assertProblem(t, inCondition, 422)
  t.same(inCondition.data.errors, [{ pointer: `/body/decision/condition/eq/1/literal/a${'/0'.repeat(30)}`, detail: 'nests deeper than 31 levels: a record\'s field holds no deeper value' }])
  t.equal((await stepsOf(id)).length, 3, 'only the steps within the limits were saved')
})

t.test('branches point forward; a missing target is refused at activation (and at once in an active template)', async (t) => {
  const id = await template([task('First'), task('Second')])
  const url = `/v1/process-templates/${id}/steps`
  let res = await client.post(url, decide('Back', 1, null))
  assertProblem(t, res, 422)
  t.same(res.data.errors, [{ pointer: '/body/decision/yes', detail: 'points back to step 1: branches go forward only (after step 3), as a loop would never end' }])
  res = await client.post(url, decide('Self', null, 3))
  assertProblem(t, res, 422, /\/body\/decision\/no/)

  // Built in the order it runs: the decision may name steps still to be added.
  res = await client.post(url, decide('Ahead', 4, 5))
  t.equal(res.statusCode, 201, res.body)
  await client.post(url, task('Yes'))
  res = await activate(id)
  assertProblem(t, res, 422)
  t.same(res.data.errors, [{ pointer: '/body/active', detail: `step 3 "Ahead" (${(await stepsOf(id))[2].id}): decision/no points to step 5, which does not exist (the template has 4 step(s)); use null to end the process` }])
  await client.post(url, task('No'))
  res = await activate(id)
  t.equal(res.statusCode, 200, res.body)

  res = await client.post(url, decide('Nowhere', 9, null))
  assertProblem(t, res, 422, /points to step 9, which does not exist \(the template has 6 step\(s\)\)/)
})

t.test('a step every branch jumps past is refused at activation', async (t) => {
  const id = await template([decide('Jump', 3, 3), task('Never'), task('Always')])
  const res = await activate(id)
  assertProblem(t, res, 422)
  t.match(res.data.errors, [{ pointer: '/body/active', detail: /^step 2 "Never" .*can never be reached/ }])
})

t.test('an active template gains no step every branch jumps past: an insert, an edit or a delete that would leave one is refused', async (t) => {
  const manual = (name: string, yes: number | null, no: number | null) => ({ kind: 'decision', name, decision: { mode: 'manual', yes, no } })
  const id = await template([manual('Sell?', 2, 3), task('Stage it'), manual('Ready?', 4, null), task('Publish')])
  t.equal((await activate(id)).statusCode, 200)
  const url = `/v1/process-templates/${id}/steps`
  const before = await stepsOf(id)

  // Inserted at the yes branch's step, the new step would sit where every branch jumps past it.
  let res = await client.post(url, { ...task('Photos'), position: 2 })
  assertProblem(t, res, 422)
  t.same(res.data.errors, [{ pointer: '/body/position', detail: 'step 2 "Photos" could never be reached: every branch before it would jump past it' }])
  // Appended after a decision that ends the process either way.
  const ends = await template([manual('Worth it?', null, null)])
  t.equal((await activate(ends)).statusCode, 200)
  res = await client.post(`/v1/process-templates/${ends}/steps`, task('After the end'))
  assertProblem(t, res, 422)
  t.same(res.data.errors, [{ pointer: '/body/position', detail: 'step 2 "After the end" could never be reached: every branch before it would jump past it' }])

  res = await client.patch(`${url}/${before[0].id}`, { decision: { mode: 'manual', yes: 3, no: 3 } })
  assertProblem(t, res, 422)
  t.same(res.data.errors, [{ pointer: '/body/decision', detail: 'step 2 "Stage it" could never be reached: every branch before it would jump past it' }])

  const jump = await template([manual('Sell?', 2, 3), manual('Skip', 4, 4), task('Ask again'), task('Publish')])
  t.equal((await activate(jump)).statusCode, 200)
  const [first] = await stepsOf(jump)
  res = await client.delete(`/v1/process-templates/${jump}/steps/${first.id}`)
  assertProblem(t, res, 422)
  t.same(res.data.errors, [{ pointer: '/params/stepId', detail: 'step 2 "Ask again" could never be reached: every branch before it would jump past it' }])

  t.same(await stepsOf(id), before, 'the refused changes changed nothing')
  t.equal((await stepsOf(jump)).length, 4)
  res = await client.post(url, { ...task('Photos'), position: 3 })
  t.equal(res.statusCode, 201, 'a step a path reaches is inserted as before')

  // A template saved before these checks, with a step stranded already: changes that strand no other
  // step go ahead, so it can be mended (or left) step by step; one that strands another is refused.
  const old = await template([manual('Sell?', 2, 3), task('Stranded'), task('Publish'), task('Archive')])
  t.equal((await activate(old)).statusCode, 200)
  const [sell, stranded, publish] = await stepsOf(old)
  await sql`update template_steps set settings = jsonb_set(settings, '{yes}', '3') where id = ${sell.id}`.execute(ctx.db)
  const oldUrl = `/v1/process-templates/${old}/steps`
  t.equal((await client.patch(`${oldUrl}/${publish.id}`, { name: 'Publish it' })).statusCode, 200, 'an edit elsewhere goes ahead')
  t.equal((await client.post(oldUrl, task('Tidy up'))).statusCode, 201, 'so does an insert')
  res = await client.patch(`${oldUrl}/${sell.id}`, { decision: { mode: 'manual', yes: 4, no: 4 } })
  assertProblem(t, res, 422)
  t.same(res.data.errors, [{ pointer: '/body/decision', detail: 'step 3 "Publish it" could never be reached: every branch before it would jump past it' }], 'only the step it strands is named')
  t.equal((await client.delete(`${oldUrl}/${stranded.id}`)).statusCode, 204, 'the stranded step can be deleted')
  t.equal((await client.patch(`/v1/process-templates/${old}`, { active: false })).statusCode, 200)
  t.equal((await activate(old)).statusCode, 200, 'and the template is whole again')
})

t.test('in an active template a kind change is an edit like any other: it drops the former kind\'s settings, unless it strands a step or breaks a branch', async (t) => {
  const manual = (name: string, yes: number | null, no: number | null) => ({ kind: 'decision', name, decision: { mode: 'manual', yes, no } })
  const mail = { kind: 'email', name: 'Tell the controller', email: { mode: 'automatic', to: 'controller', subject: 'Done', body: 'Step {{step.name}} is done.' } }
  const id = await template([manual('Sell?', 2, 3), manual('Skip', 4, 4), task('Ask again'), mail, task('Publish')])
  t.equal((await activate(id)).statusCode, 200)
  const url = `/v1/process-templates/${id}/steps`
  const before = await stepsOf(id)
  const [sell, skip, ask, tell] = before

  // Step 3 is reached only through the first decision's no branch: as a task, step 1 would lead past it.
  let res = await client.patch(`${url}/${sell.id}`, { kind: 'task' })
  assertProblem(t, res, 422)
  t.same(res.data.errors, [{ pointer: '/body/kind', detail: 'step 3 "Ask again" could never be reached: every branch before it would jump past it' }])
  res = await client.patch(`${url}/${ask.id}`, { kind: 'decision', decision: { mode: 'manual', yes: 9, no: null } })
  assertProblem(t, res, 422, /\/body\/decision\/yes points to step 9, which does not exist/)
  t.same(await stepsOf(id), before, 'the refused changes changed nothing')

  res = await client.patch(`${url}/${tell.id}`, { kind: 'task' }, { 'if-match': `"${tell.version}"` })
  t.equal(res.statusCode, 200, res.body)
  t.match(res.data, { kind: 'task', email: null, version: tell.version + 1 }, 'the mail goes with its kind')
  res = await client.patch(`${url}/${skip.id}`, { kind: 'task' })
  t.equal(res.statusCode, 200, res.body)
  t.same([res.data.kind, res.data.decision], ['task', null], 'a plain jump that strands nothing becomes a task')
  res = await client.patch(`${url}/${ask.id}`, { kind: 'writeValues', refersTo: { property: true }, writeValues: { values: [{ record: 'property', field: 'asked', value: true }] } })
  t.equal(res.statusCode, 200, res.body)
  t.match((await client.get(`/v1/process-templates/${id}`)).data, { active: true, steps: [{ kind: 'decision' }, { kind: 'task' }, { kind: 'writeValues' }, { kind: 'task' }, { kind: 'task' }] })
})

t.test('branches follow their steps on insert, delete and reorder; a change that breaks one is refused', async (t) => {
  const id = await template([
    decide('Sell?', 3, 2),
    task('Ask again'),
    { ...decide('Ready?', 4, null), decision: { mode: 'automatic', condition: { eq: [{ step: 1, of: 'decision' }, 'yes'] }, yes: 4, no: null } },
    task('Exposé')
  ])
  const url = `/v1/process-templates/${id}/steps`
  let steps = await stepsOf(id)
  const [sell, ask, ready, expose] = steps.map((s: { id: string }) => s.id)

  // An insert before them moves every position they name.
  let res = await client.post(url, { ...task('Intake'), position: 1 })
  t.equal(res.statusCode, 201, res.body)
  steps = await stepsOf(id)
  t.match(steps[1].decision, { yes: 4, no: 3 })
  t.same(steps[3].decision.condition, { eq: [{ step: 2, of: 'decision' }, 'yes'] })
  t.match(steps[3].decision, { yes: 5, no: null })
  t.equal(steps[3].version, 2, 'a step whose branches moved has a new version')

  // A branch target cannot be deleted.
  res = await client.delete(`${url}/${expose}`)
  assertProblem(t, res, 422)
  t.same(res.data.errors, [
    { pointer: '/params/stepId', detail: 'step 4 "Ready?" names this step in its yes branch: change that step first' }
  ])
  res = await client.delete(`${url}/${sell}`)
  assertProblem(t, res, 422, /step 4 "Ready\?" names this step in an expression that reads it/)
  res = await client.delete(`${url}/${steps[0].id}`)
  t.equal(res.statusCode, 204, 'deleting a step nobody names moves the positions back')
  steps = await stepsOf(id)
  t.match(steps[0].decision, { yes: 3, no: 2 })
  t.match(steps[2].decision, { yes: 4, no: null, condition: { eq: [{ step: 1, of: 'decision' }, 'yes'] } })

  // A reorder that keeps every branch forward is followed; one that turns a branch back is refused.
  res = await client.put(`${url}/order`, { stepIds: [sell, ready, ask, expose] })
  t.equal(res.statusCode, 200, res.body)
  t.match(res.data.steps[0].decision, { yes: 2, no: 3 }, 'the branches follow their steps')
  t.match(res.data.steps[1].decision, { yes: 4, condition: { eq: [{ step: 1, of: 'decision' }, 'yes'] } })
  res = await client.put(`${url}/order`, { stepIds: [ready, sell, ask, expose] })
  assertProblem(t, res, 422)
  t.same(res.data.errors, [
    { pointer: '/body/stepIds/0', detail: 'step 1 "Ready?" would have decision/condition reads step 2, which does not come before step 1' },
    { pointer: '/body/stepIds/1', detail: 'step 2 "Sell?" would have decision/yes points back to step 1: branches go forward only (after step 2), as a loop would never end' }
  ])
  t.match((await stepsOf(id)).map((s: { id: string }) => s.id), [sell, ready, ask, expose], 'the refused order changed nothing')
})

t.test('a copy keeps the branches; a PATCH changes them, and a new kind drops them', async (t) => {
  const id = await template([decide('Sell?', 3, 2), task('Ask again'), task('Exposé')])
  const copy = await client.post(`/v1/process-templates/${id}/copy`, {})
  t.equal(copy.statusCode, 201, copy.body)
  t.same(copy.data.steps[0].decision, (await stepsOf(id))[0].decision)

  const stepUrl = `/v1/process-templates/${id}/steps/${(await stepsOf(id))[0].id}`
  let res = await client.patch(stepUrl, { decision: { mode: 'manual', yes: 2, no: null } })
  t.equal(res.statusCode, 200, res.body)
  t.same(res.data.decision, { mode: 'manual', yes: 2, no: null })
  res = await client.patch(stepUrl, { decision: { mode: 'manual', yes: 1, no: null } })
  assertProblem(t, res, 422, /\/body\/decision\/yes points back to step 1/)
  res = await client.patch(stepUrl, { kind: 'task' })
  t.equal(res.statusCode, 200, res.body)
  t.same([res.data.kind, res.data.decision], ['task', null])
})
