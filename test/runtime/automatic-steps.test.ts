import t, { type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import { sql } from '../../src/db/kysely.js'
import { automaticStepRunners, type AutomaticStepRunner } from '../../src/scheduler/automatic-steps/runners.js'
import { findDueWaitingStepIds, findOverdueStepIds } from '../../src/scheduler/step-chores-repository.js'
import { heldDeletion } from '../helpers/deletion.js'
import { setupRuntime, type Processes, type RuntimeContext } from '../helpers/runtime.js'

// The chore that carries out automatic steps (src/scheduler/automatic-steps), apart from any kind: a
// task step is made automatic in the database and given a runner for the length of a test, so the
// chore's promises are checked on their own: one run per step, a step whose kind has no runner or
// whose runner fails turns into a manual step with one mail to the controller, and the others go on.

async function automaticTasks(rt: RuntimeContext, names: string[], processes: Processes = rt) {
  const templateId = await processes.template(names.map((name) => ({ kind: 'task', name })))
  const started = await Promise.all(names.map(() => processes.start(templateId)))
  await sql`update instance_steps set automatic = true where position = 1 and instance_id in (${sql.join(started.map((s) => s.id))})`.execute(rt.db)
  return started.map((s) => s.id as string)
}

function withRunner(t: Test, runner: AutomaticStepRunner): void {
  automaticStepRunners.task = runner
  t.teardown(() => { delete automaticStepRunners.task })
}

t.test('automatic steps', async (t) => {
  const rt = await setupRuntime(t)

  t.test('a step whose kind no runner carries out fails into a manual step, and the controller hears of it once', async (t) => {
    const [id] = await automaticTasks(rt, ['Nobody does this'])
    const run = await rt.scheduler.runOnce()
    t.equal(run.automaticSteps, 1)
    const view = await rt.instance(id!)
    t.equal(view.steps[0].state, 'failed', 'a manual step now')
    t.equal(view.currentStep.state, 'failed')
    const mails = rt.smtp.mails.filter((m) => m.subject.includes('Automatic step failed'))
    t.equal(mails.length, 1, 'one mail')
    t.match(mails[0]!.text, /cannot carry out task steps by itself/)
    t.equal((await rt.scheduler.runOnce()).automaticSteps, 0, 'not tried again')
    const done = await rt.api.post(`/v1/process-instances/${id}/advance`, { outcome: 'done' })
    t.equal(done.statusCode, 200, 'a person does it by hand')
  })

  t.test('two schedulers carry out each step once; the next step starts in the same commit', async (t) => {
    const calls = new Map<string, number>()
    withRunner(t, async ({ changes, instance, step }) => {
      calls.set(step.id, (calls.get(step.id) ?? 0) + 1)
      changes.endStep(instance, step, 'done', null, 'automatic')
    })
    const templateId = await rt.template([{ kind: 'task', name: 'Automatic' }, { kind: 'task', name: 'By hand' }])
    const ids = await Promise.all(Array.from({ length: 30 }, async () => (await rt.start(templateId)).id as string))
    await sql`update instance_steps set automatic = true where position = 1 and instance_id in (${sql.join(ids)})`.execute(rt.db)
    const other = rt.newScheduler({ batchSize: 7 })
    const runs = await Promise.all([rt.scheduler.runOnce(), other.runOnce()])
    t.equal(runs[0].automaticSteps + runs[1].automaticSteps, 30, 'thirty steps carried out between them')
    t.equal(calls.size, 30)
    t.ok([...calls.values()].every((n) => n === 1), 'each once')
    for (const id of ids.slice(0, 3)) {
      const view = await rt.instance(id)
      t.same(view.steps.map((s: { state: string }) => s.state), ['done', 'due'])
    }
  })

  t.test('a runner that throws fails only its own step, which turns into a manual one', async (t) => {
    withRunner(t, async ({ changes, instance, step }) => {
      if (step.name === 'Breaks') throw new Error('the runner broke')
      changes.endStep(instance, step, 'done', null, 'automatic')
    })
    const breaking = await automaticTasks(rt, ['Breaks'])
    const fine = await automaticTasks(rt, ['Works', 'Works too'])
    const errors: string[] = []
    const scheduler = rt.newScheduler({}, { info() {}, warn() {}, error(_fields, message) { errors.push(message ?? '') } })
    await scheduler.runOnce()
    t.equal((await rt.instance(breaking[0]!)).steps[0].state, 'failed')
    for (const id of fine) t.equal((await rt.instance(id)).steps[0].state, 'done', 'the others ran')
    t.ok(errors.length > 0, 'the failure is logged')
    const mail = rt.smtp.mails.find((m) => m.subject.includes('Automatic step failed') && m.text.includes('the runner broke'))
    t.ok(mail, 'the controller hears why')
  })

  // A follow-up whose template was deleted at the instant its child started failed with the
  // database's own message in its reason, naming the table and the constraint, for anyone to read.
  t.test('a step the database refuses is given up with a reason that names no table or constraint', async (t) => {
    withRunner(t, async ({ db, changes, instance, step }) => {
      // A change the database refuses, as a deleted template refuses its child's insert: an assignee no user has.
      await sql`update instance_steps set assignee_user_id = ${randomUUID()} where tenant_id = ${step.tenant_id} and id = ${step.id}`.execute(db)
      changes.endStep(instance, step, 'done', null, 'automatic')
    })
    const [refused] = await automaticTasks(rt, ['Refused by the database'])
    const errors: unknown[] = []
    const scheduler = rt.newScheduler({}, { info() {}, warn() {}, error(fields) { errors.push(fields) } })
    await scheduler.runOnce()
    const view = await rt.instance(refused!)
    t.equal(view.steps[0].state, 'failed', 'a manual step now')
    const activity = (await rt.api.get(`/v1/process-instances/${refused}/activities`)).json()
    const failed = (activity.items as { kind: string; message: string; data: unknown }[]).find((a) => a.kind === 'automaticStepFailed')
    t.equal(failed?.message, 'Automatic step "Refused by the database" failed: an internal error stopped it (a record it refers to does not exist, or was deleted meanwhile, SQLSTATE 23503).')
    t.same(failed?.data, { reason: 'an internal error stopped it (a record it refers to does not exist, or was deleted meanwhile, SQLSTATE 23503)' })
    const mail = rt.smtp.mails.find((m) => m.subject.includes('Automatic step failed') && m.text.includes('Refused by the database'))
    t.match(mail?.text, /a record it refers to does not exist, or was deleted meanwhile, SQLSTATE 23503/, 'the controller hears what happened')
    t.notMatch(mail?.text, /instance_steps|constraint|violates/, 'and nothing of the schema')
    t.match(JSON.stringify(errors), /instance_steps_tenant_id_assignee_user_id_fkey/, 'the log keeps what the database said')
  })

  t.test('a tenant being deleted has no automatic step carried out: its due step is left while the deletion waits, another tenant\'s is carried out', async (t) => {
    const ran: string[] = []
    withRunner(t, async ({ changes, instance, step }) => {
      ran.push(step.name)
      changes.endStep(instance, step, 'done', null, 'automatic')
    })
    const going = await rt.newRuntimeTenant('Going GmbH')
    const [goingId] = await automaticTasks(rt, ['Going step'], going)
    const [stayingId] = await automaticTasks(rt, ['Staying step'])
    const deletion = await heldDeletion(rt, going.tenant.id)
    t.equal((await rt.scheduler.runOnce()).automaticSteps, 1, 'one step carried out')
    t.same(ran, ['Staying step'], 'only the other tenant\'s')
    t.equal((await rt.instance(stayingId!)).steps[0].state, 'done')
    const { rows } = await sql<{ state: string }>`select state from instance_steps where instance_id = ${goingId} and position = 1`.execute(rt.db)
    t.same(rows, [{ state: 'due' }], 'the going tenant\'s step stays due until the deletion takes it')
    t.equal((await deletion.finish()).statusCode, 204)
  })

  t.test('a step whose runner throws is given up even when older due steps of a tenant being deleted fill the batch', async (t) => {
    withRunner(t, async ({ changes, instance, step }) => {
      if (step.name === 'Breaks') throw new Error('the runner broke')
      changes.endStep(instance, step, 'done', null, 'automatic')
    })
    // The going tenant's steps fell due first: the oldest due steps, which the chore leaves to the deletion.
    const going = await rt.newRuntimeTenant('Going Again GmbH')
    await automaticTasks(rt, ['Going 1', 'Going 2'], going)
    rt.clock.advance(60_000)
    const [breaking] = await automaticTasks(rt, ['Breaks'])
    const [working] = await automaticTasks(rt, ['Works'])
    const deletion = await heldDeletion(rt, going.tenant.id)
    const scheduler = rt.newScheduler({ batchSize: 2 }, { info() {}, warn() {}, error() {} })
    await scheduler.runOnce()
    await scheduler.runOnce()
    t.equal((await rt.instance(breaking!)).steps[0].state, 'failed', 'the breaking step turned manual')
    t.equal((await rt.instance(working!)).steps[0].state, 'done', 'the other tenant\'s work goes on')
    t.equal((await deletion.finish()).statusCode, 204)
  })

  // The other chores that try a failed batch's steps one by one (starting waiting steps, reporting missed
  // deadlines) list them as their batch takes them: before, a tenant being deleted left its steps in the
  // lists, where the oldest filled them and kept the steps behind from ever being tried alone.
  t.test('the chores\' lists of steps to try one by one leave out what their batches leave: a tenant being deleted', async (t) => {
    const going = await rt.newRuntimeTenant('Going Once More GmbH')
    const goingTemplate = await going.template([{ kind: 'task', name: 'Going task' }])
    const stayingTemplate = await rt.template([{ kind: 'task', name: 'Staying task' }])
    const steps = async (instanceId: string) => (await sql<{ id: string }>`
      select id from instance_steps where instance_id = ${instanceId} and position = 1`.execute(rt.db)).rows[0]!.id
    const [goingWaiting, goingOverdue, stayingWaiting, stayingOverdue] = await Promise.all([
      going.start(goingTemplate), going.start(goingTemplate), rt.start(stayingTemplate), rt.start(stayingTemplate)
    ].map(async (started) => steps((await started).id)))
    const now = rt.clock.now()
    const past = new Date(now.getTime() - 3_600_000)
    await sql`update instance_steps set state = 'waiting', start_at = ${past} where id in (${goingWaiting!}, ${stayingWaiting!})`.execute(rt.db)
    await sql`update instance_steps set deadline_at = ${past} where id in (${goingOverdue!}, ${stayingOverdue!})`.execute(rt.db)
    const deletion = await heldDeletion(rt, going.tenant.id)
    const waiting = (await findDueWaitingStepIds(rt.db, now, 1000)).map((s) => s.id)
    t.ok(waiting.includes(stayingWaiting!), 'a waiting step whose time has come is listed')
    t.notOk(waiting.includes(goingWaiting!), 'the going tenant\'s is not')
    const overdue = (await findOverdueStepIds(rt.db, now, 1000)).map((s) => s.id)
    t.ok(overdue.includes(stayingOverdue!), 'an overdue step is listed')
    t.notOk(overdue.includes(goingOverdue!), 'the going tenant\'s is not')
    t.equal((await deletion.finish()).statusCode, 204)
  })
})
