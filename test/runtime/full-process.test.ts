import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { DAY, HOUR } from '../helpers/clock.js'
import { setupRuntime } from '../helpers/runtime.js'

t.test('a process walks webhook → task → webhook two days later, driven by the clock', async (t) => {
  const rt = await setupRuntime(t)
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Ask ValueCo for a valuation', responsibility: 'propertyMaintainer', refersTo: { property: true }, parameters: { mode: 'quick' } },
    { kind: 'task', name: 'Call the owner', responsibility: { user: rt.controller.id }, refersTo: { property: true } },
    { kind: 'webhook', name: 'Refresh the valuation', start: { mode: 'daysAfterPrevious', days: 2 }, deadlineDays: 1, refersTo: { property: true } }
  ], { notifyOnCompletion: true })
  const startedAt = rt.clock.now()
  const started = await rt.start(templateId)
  t.equal(started.status, 'running')
  t.same(started.steps.map((s: { state: string }) => s.state), ['due', 'pending', 'pending'], 'the first step is due at once')
  t.equal(started.steps[0].delivery.status, 'pending')
  const [first, second, third] = started.steps.map((s: { id: string }) => s.id)

  // The scheduler calls the first webhook; its success starts the task.
  let run = await rt.scheduler.runOnce()
  t.equal(run.deliveries, 1)
  let view = await rt.instance(started.id)
  t.same(view.steps.map((s: { state: string }) => s.state), ['done', 'due', 'pending'])
  t.equal(view.steps[0].assigneeUserId, rt.worker.id, 'propertyMaintainer resolves to the maintainer')
  t.equal(view.steps[1].assigneeUserId, rt.controller.id, 'a {user} responsibility resolves to that user')
  t.equal(view.steps[0].delivery.status, 'succeeded')
  t.equal(view.currentStep.id, second)

  const call1 = rt.provider.calls[0]!
  t.ok(call1.signatureValid, 'the provider verifies the signature')
  t.equal(call1.method, 'GET')
  t.match(call1.query, {
    v: '2', mode: 'quick', customerWebId: rt.tenant.webId, customerName: 'Muster Immobilien', userId: rt.worker.id,
    estateId: rt.propertyId, processId: started.id, stepId: first, deliveryId: view.steps[0].delivery.id,
    timestamp: String(Math.floor(startedAt.getTime() / 1000))
  })
  t.equal(call1.headers['idempotency-key'], view.steps[0].delivery.id)
  t.match(call1.headers['user-agent'], /^Baton\//)

  // A person ends the task; the third step waits two calendar days.
  const advanced = await rt.api.post(`/v1/process-instances/${started.id}/advance`, { outcome: 'done', stepId: second, note: 'Owner agreed' })
  t.equal(advanced.statusCode, 200, advanced.body)
  t.equal(advanced.data.steps[1].state, 'done')
  t.equal(advanced.data.steps[1].note, 'Owner agreed')
  t.equal(advanced.data.steps[2].state, 'waiting')
  t.equal(advanced.data.steps[2].startAt, new Date(rt.clock.now().getTime() + 2 * DAY).toISOString())
  const waiting = await rt.api.get('/v1/process-instances?currentStepState=waiting')
  t.same(waiting.data.items.map((i: { id: string }) => i.id), [started.id], 'listed as waiting')

  run = await rt.scheduler.runOnce()
  t.equal(run.stepsStarted, 0, 'nothing starts before its time')
  t.equal(rt.provider.calls.length, 1)

  // Two days later the step starts; the provider answers 503 once, so the step stays open past its deadline.
  rt.provider.queue({ status: 503, body: 'busy' })
  rt.clock.advance(2 * DAY)
  run = await rt.scheduler.runOnce()
  t.equal(run.stepsStarted, 1)
  view = await rt.instance(started.id)
  t.equal(view.steps[2].state, 'due')
  t.equal(view.steps[2].delivery.status, 'pending')
  t.equal(view.steps[2].delivery.lastStatusCode, 503)
  t.equal(view.steps[2].deadlineAt, new Date(rt.clock.now().getTime() + DAY).toISOString())
  t.equal(rt.provider.calls.length, 2)

  rt.clock.advance(DAY + 2 * HOUR)
  run = await rt.scheduler.runOnce()
  t.equal(run.deadlines, 1, 'the missed deadline is reported')
  view = await rt.instance(started.id)
  t.equal(view.status, 'completed')
  t.same(view.steps.map((s: { state: string }) => s.state), ['done', 'done', 'done'])
  t.equal(view.currentStep, null)

  const [, retried, final] = rt.provider.calls
  t.ok(retried!.signatureValid && final!.signatureValid)
  t.equal(final!.query.mode, 'full', 'the default of an unset parameter is sent')
  t.equal(final!.query.stepId, third)
  t.equal(final!.headers['idempotency-key'], retried!.headers['idempotency-key'], 'the key is the same across retries')
  t.equal(rt.provider.calls.length, 3, 'the provider received exactly the expected calls')

  await rt.scheduler.runOnce()
  const subjects = rt.smtp.mails.map((m) => m.subject).sort()
  t.equal(subjects.length, 2)
  t.match(subjects[0], /^Deadline missed: "Refresh the valuation" in "Re-value a property" \(2 hours late\)/)
  t.match(subjects[1], /^Process completed: "Re-value a property"/)
  t.ok(rt.smtp.mails.every((m) => m.to.includes('clara@example.com')), 'mails go to the controller')
  const deadlineMail = rt.smtp.mails.find((m) => m.subject.startsWith('Deadline'))!
  t.match(deadlineMail.text, /Late by:\s+2 hours/)
  t.match(deadlineMail.text, new RegExp(rt.propertyId))

  const activities = await rt.api.get(`/v1/properties/${rt.propertyId}/activities?limit=200`)
  t.same(activities.data.items.map((a: { kind: string }) => a.kind).reverse(), [
    'processStarted', 'stepStarted', 'webhookSucceeded', 'stepDone', 'stepStarted', 'stepDone',
    'stepStarted', 'webhookSucceeded', 'stepDone', 'processCompleted'
  ])
  const onInstance = await rt.api.get(`/v1/process-instances/${started.id}/activities?limit=200`)
  t.equal(onInstance.data.items.length, 10)

  const deliveries = await rt.api.get(`/v1/deliveries?instanceId=${started.id}`)
  t.equal(deliveries.data.items.length, 2)
  const third3 = deliveries.data.items.find((d: { stepId: string }) => d.stepId === third)
  t.same(third3.attempts.map((a: { outcome: string; statusCode: number }) => [a.outcome, a.statusCode]), [['retry', 503], ['succeeded', 200]])
  t.equal(third3.attempts[0].responseBody, 'busy')
})

t.test('an instance with no further work leaves the scheduler idle', async (t) => {
  const rt = await setupRuntime(t)
  const templateId = await rt.template([{ kind: 'task', name: 'Only task' }])
  const started = await rt.start(templateId, { propertyId: undefined })
  const run = await rt.scheduler.runOnce()
  t.same(run, { stepsStarted: 0, automaticSteps: 0, autostarts: 0, deliveries: 0, deadlines: 0, mails: 0, reaped: 0 })
  const done = await rt.api.post(`/v1/process-instances/${started.id}/advance`, { outcome: 'done' })
  t.equal(done.data.status, 'completed')
  t.equal(rt.smtp.mails.length, 0, 'no completion mail unless the template asks')
})

t.test('forty waiting steps fall due at once: two schedulers start each exactly once, in batches', async (t) => {
  const rt = await setupRuntime(t)
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Re-value tomorrow', start: { mode: 'daysAfterPrevious', days: 1 }, responsibility: 'propertyMaintainer', refersTo: { property: true } },
    { kind: 'task', name: 'Look at it', deadlineDays: 2 }
  ])
  const N = 40
  for (let i = 0; i < N; i++) await rt.start(templateId)
  rt.clock.advance(DAY + HOUR)
  // Connections for both opened first: on a busy machine, one scheduler's wait for a new connection
  // let the other start all forty alone (40 and 0).
  await Promise.all(Array.from({ length: 4 }, () => sql`select pg_sleep(0.02)`.execute(rt.db)))
  const [a, b] = [rt.newScheduler({ batchSize: 7 }), rt.newScheduler({ batchSize: 7 })]
  const [runA, runB] = await Promise.all([a.runOnce(), b.runOnce()])
  t.equal(runA.stepsStarted + runB.stepsStarted, N, 'every waiting step started once between them')
  t.ok(runA.stepsStarted > 0 && runB.stepsStarted > 0, `both took part (${runA.stepsStarted} and ${runB.stepsStarted})`)
  const deliveries = await rt.db.selectFrom('deliveries').select(['step_id', 'status']).execute()
  t.equal(deliveries.length, N, 'one delivery per step')
  t.equal(new Set(deliveries.map((d) => d.step_id)).size, N)
  t.ok(deliveries.every((d) => d.status === 'succeeded'), 'all delivered')
  const started = await rt.db.selectFrom('activities').select('step_id').where('kind', '=', 'stepStarted').execute()
  t.equal(started.length, 2 * N, 'one "started" activity per step: the webhook and then the task')
  const steps = await rt.db.selectFrom('instance_steps').select(['position', 'state', 'assignee_user_id', 'deadline_at']).execute()
  t.ok(steps.filter((s) => s.position === 1).every((s) => s.state === 'done' && s.assignee_user_id === rt.worker.id), 'the webhooks are done, assigned to the property\'s maintainer')
  t.ok(steps.filter((s) => s.position === 2).every((s) => s.state === 'due' && s.deadline_at !== null), 'the tasks are due, with their deadlines')
  const versions = await rt.db.selectFrom('process_instances').select('version').execute()
  t.ok(versions.every((v) => v.version === versions[0]!.version), 'each process moved on by the same number of changes')
})
