import t from 'tap'
import { setupRuntime, type InstanceView } from '../helpers/runtime.js'

// One runtime for the file: decisions taken by the scheduler and by people, on real Postgres, SMTP and a loopback provider.
const rt = await setupRuntime(t)

const states = (view: InstanceView) => view.steps.map((s: { state: string }) => s.state)

async function newProperty(fields: Record<string, unknown>): Promise<string> {
  const made = await rt.api.post('/v1/properties', { maintainerUserId: rt.worker.id, fields })
  if (made.statusCode !== 201) throw new Error(made.body)
  return made.data.id as string
}

t.test('an automatic decision on a field takes each branch; a plain jump rejoins past the other branch', async (t) => {
  const templateId = await rt.template([
    {
      kind: 'decision', name: 'Expensive?', refersTo: { property: true },
      decision: { mode: 'automatic', condition: { gt: [{ field: 'property.price' }, 400000] }, yes: 2, no: 4 }
    },
    { kind: 'task', name: 'Book the premium photographer' },
    { kind: 'decision', name: 'Rejoin', decision: { mode: 'automatic', yes: 5, no: 5 } },
    { kind: 'task', name: 'Take photos yourself' },
    { kind: 'task', name: 'Publish the listing' }
  ])
  const expensive = await rt.start(templateId, { propertyId: await newProperty({ price: 450000 }) })
  const cheap = await rt.start(templateId, { propertyId: await newProperty({ price: 300000 }) })
  t.same(states(expensive), ['due', 'pending', 'pending', 'pending', 'pending'], 'an automatic decision is due at the start')
  t.equal(expensive.steps[0].decision.chosen, null)

  const run = await rt.scheduler.runOnce()
  t.equal(run.automaticSteps, 2, 'both decisions ran')
  let view = await rt.instance(expensive.id)
  t.same(states(view), ['done', 'due', 'pending', 'pending', 'pending'], 'yes: the premium branch')
  t.same(view.steps[0].decision, { mode: 'automatic', condition: { gt: [{ field: 'property.price' }, 400000] }, yes: 2, no: 4, chosen: 'yes' })
  view = await rt.instance(cheap.id)
  t.same(states(view), ['done', 'skipped', 'skipped', 'due', 'pending'], 'no: the steps of the yes branch are skipped')
  t.equal(view.steps[0].decision.chosen, 'no')
  t.equal(view.steps[1].note, 'not on the chosen branch')
  t.equal(view.currentStep.position, 4)

  // The premium branch ends with a jump past the other branch.
  const advanced = await rt.api.post(`/v1/process-instances/${expensive.id}/advance`, { outcome: 'done', stepId: expensive.steps[1].id })
  t.equal(advanced.statusCode, 200, advanced.body)
  await rt.scheduler.runOnce()
  view = await rt.instance(expensive.id)
  t.same(states(view), ['done', 'done', 'done', 'skipped', 'due'], 'the jump skips the no branch and rejoins')
  t.equal(view.steps[3].note, 'not on the chosen branch')

  const activities = (await rt.api.get(`/v1/process-instances/${cheap.id}/activities?limit=100`)).data.items
  t.ok(activities.some((a: { kind: string; message: string }) => a.kind === 'decisionTaken' && a.message === 'Decision "Expensive?": no; the process continues at step 4.'))
  t.equal(rt.smtp.mails.filter((m) => m.subject.startsWith('Step skipped')).length, 0, 'steps off the chosen branch send no mail')
})

t.test('an automatic decision on an earlier webhook step\'s answer takes each branch; null ends the process', async (t) => {
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Ask ValueCo', refersTo: { property: true } },
    {
      kind: 'decision', name: 'Valued at once?',
      decision: { mode: 'automatic', condition: { eq: [{ step: 1, of: 'statusCode' }, 200] }, yes: 3, no: null }
    },
    { kind: 'task', name: 'Tell the owner the value' }
  ])
  rt.provider.queue({ status: 200 })
  const answered = await rt.start(templateId)
  await rt.scheduler.runOnce()
  rt.provider.queue({ status: 202 })
  const accepted = await rt.start(templateId)
  await rt.scheduler.runOnce()

  let view = await rt.instance(answered.id)
  t.same(states(view), ['done', 'done', 'due'], '200: yes')
  t.equal(view.steps[1].decision.chosen, 'yes')
  view = await rt.instance(accepted.id)
  t.same(states(view), ['done', 'done', 'skipped'], '202: no, which ends the process')
  t.equal(view.status, 'completed')
  t.equal(view.steps[1].decision.chosen, 'no')
})

t.test('a condition that cannot be evaluated fails the decision into a manual one, decided by advancing', async (t) => {
  const templateId = await rt.template([
    {
      kind: 'decision', name: 'Worth a second look?', refersTo: { property: true },
      decision: { mode: 'automatic', condition: { gt: [{ divide: [{ field: 'property.price' }, { field: 'property.livingArea' }] }, 5000] }, yes: 2, no: 3 }
    },
    { kind: 'task', name: 'Second look' },
    { kind: 'task', name: 'File it' }
  ])
  const started = await rt.start(templateId, { propertyId: await newProperty({ price: 450000, livingArea: 0 }) })
  await rt.scheduler.runOnce()
  let view = await rt.instance(started.id)
  t.same(states(view), ['failed', 'pending', 'pending'])
  const mail = rt.smtp.mails.find((m) => m.subject.includes('"Worth a second look?"'))
  t.ok(mail, 'the controller hears of it')
  t.match(mail?.text, /division by zero/)
  const decided = await rt.api.post(`/v1/process-instances/${started.id}/advance`, { outcome: 'done', decision: 'no' })
  t.equal(decided.statusCode, 200, decided.body)
  view = decided.data
  t.same(states(view), ['done', 'skipped', 'due'])
  t.equal(view.steps[0].decision.chosen, 'no')
})

t.test('a value shown in a failed condition\'s reason is cut between characters, never inside one', async (t) => {
  // 'a' and then emoji (two UTF-16 units each): a cut after 50 units used to split one in two,
  // and the reason, lone half and all, could not be stored, so the step failed with "an internal error".
  const text = 'a' + '😀'.repeat(100)
  const templateId = await rt.template([
    { kind: 'decision', name: 'Compare text', refersTo: { property: true }, decision: { mode: 'automatic', condition: { lt: [{ field: 'property.text' }, 5] }, yes: 2, no: 2 } },
    { kind: 'decision', name: 'Text as condition', refersTo: { property: true }, decision: { mode: 'automatic', condition: { field: 'property.label' }, yes: 3, no: 3 } },
    { kind: 'task', name: 'Done' }
  ])
  const started = await rt.start(templateId, { propertyId: await newProperty({ text, label: '😀'.repeat(100) }) })
  await rt.scheduler.runOnce()
  t.same(states(await rt.instance(started.id)), ['failed', 'pending', 'pending'])
  let activities = (await rt.api.get(`/v1/process-instances/${started.id}/activities?limit=100`)).data.items
  t.match(activities, [{ kind: 'automaticStepFailed', message: `Automatic step "Compare text" failed: its condition could not be evaluated: lt cannot compare "a${'😀'.repeat(24)}" with 5.` }])
  await rt.api.post(`/v1/process-instances/${started.id}/advance`, { outcome: 'done', decision: 'yes' })
  await rt.scheduler.runOnce()
  t.same(states(await rt.instance(started.id)), ['done', 'failed', 'pending'])
  activities = (await rt.api.get(`/v1/process-instances/${started.id}/activities?limit=100`)).data.items
  t.match(activities, [{ kind: 'automaticStepFailed', message: `Automatic step "Text as condition" failed: its condition gave "${'😀'.repeat(24)}, not true or false.` }])
})

t.test('a manual decision: advance with yes or no; without one 422, skipping 409, two at once one wins', async (t) => {
  const templateId = await rt.template([
    { kind: 'decision', name: 'Does the owner sell?', decision: { mode: 'manual', yes: 3, no: 2 } },
    { kind: 'task', name: 'Ask again in a month' },
    { kind: 'task', name: 'Prepare the exposé' }
  ])
  const started = await rt.start(templateId)
  t.same(states(started), ['due', 'pending', 'pending'])
  t.equal((await rt.scheduler.runOnce()).automaticSteps, 0, 'a manual decision waits for its assignee')
  const url = `/v1/process-instances/${started.id}/advance`
  const stepId = started.steps[0].id

  const missing = await rt.api.post(url, { outcome: 'done', stepId })
  t.equal(missing.statusCode, 422)
  t.same(missing.data.errors, [{ pointer: '/body/decision', detail: 'required to decide a decision step' }])
  const skipped = await rt.api.post(url, { outcome: 'skipped', stepId })
  t.equal(skipped.statusCode, 409)
  t.match(skipped.data.detail, /can only be done/)
  const onTask = await rt.api.post(`/v1/process-instances/${(await rt.start(templateId, {})).id}/advance`, { outcome: 'done', decision: 'maybe' })
  t.equal(onTask.statusCode, 400, 'only yes or no')

  const [a, b] = await Promise.all([
    rt.api.post(url, { outcome: 'done', stepId, decision: 'yes' }),
    rt.api.post(url, { outcome: 'done', stepId, decision: 'no' })
  ])
  t.same([a.statusCode, b.statusCode].sort(), [200, 409], 'one advance wins, the other gets 409')
  const won = a.statusCode === 200 ? 'yes' : 'no'
  const view = await rt.instance(started.id)
  t.equal(view.steps[0].decision.chosen, won)
  t.same(states(view), won === 'yes' ? ['done', 'skipped', 'due'] : ['done', 'due', 'pending'])
  t.equal(view.version, started.version + 1, 'one change')

  const task = await rt.api.post(url, { outcome: 'done', decision: 'yes' })
  t.equal(task.statusCode, 422, 'a task takes no decision')
  t.same(task.data.errors, [{ pointer: '/body/decision', detail: 'only a decision step takes a decision' }])
})
