import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import type { Client } from '../helpers/app.js'
import { heldDeletion } from '../helpers/deletion.js'
import { setupRuntime, type Processes } from '../helpers/runtime.js'

// followUpProcess steps (issue 12 item 4): a step starts a process of another template with the same
// responsible user and linked records, through the API and the scheduler on real Postgres and SMTP.
t.test('followUpProcess steps', async (t) => {
  const rt = await setupRuntime(t)
  const states = (view: { steps: { state: string }[] }) => view.steps.map((s) => s.state)
  const childTemplate = await rt.template([{ kind: 'task', name: 'Tell the owner', refersTo: { property: true } }], { notifyOnCompletion: false })
  const childrenOf = async (id: string) => (await rt.api.get(`/v1/process-instances?parentId=${id}`)).data.items

  await t.test('saving: the template must exist, not be the own one; other kinds take no followUp', async (t) => {
    const own = (await rt.api.post('/v1/process-templates', { name: 'Self' })).data.id
    const self = await rt.api.post(`/v1/process-templates/${own}/steps`, { kind: 'followUpProcess', name: 'Again', followUp: { templateId: own } })
    t.equal(self.statusCode, 422)
    t.match(self.data.errors, [{ pointer: '/body/followUp/templateId', detail: /its own template/ }])
    const missing = await rt.api.post(`/v1/process-templates/${own}/steps`, { kind: 'followUpProcess', name: 'Gone', followUp: { templateId: '0190f3a4-0000-7000-8000-000000000000' } })
    t.equal(missing.statusCode, 422)
    t.match(missing.data.errors, [{ pointer: '/body/followUp/templateId', detail: /does not exist/ }])
    const none = await rt.api.post(`/v1/process-templates/${own}/steps`, { kind: 'followUpProcess', name: 'Nothing' })
    t.equal(none.statusCode, 422)
    const task = await rt.api.post(`/v1/process-templates/${own}/steps`, { kind: 'task', name: 'Task', followUp: { templateId: childTemplate } })
    t.equal(task.statusCode, 422)
    const ok = await rt.api.post(`/v1/process-templates/${own}/steps`, { kind: 'followUpProcess', name: 'Follow up', followUp: { templateId: childTemplate } })
    t.equal(ok.statusCode, 201, ok.body)
    t.same(ok.data.followUp, { templateId: childTemplate, waitForCompletion: false })
    const changed = await rt.api.patch(`/v1/process-templates/${own}/steps/${ok.data.id}`, { followUp: { templateId: childTemplate, waitForCompletion: true } })
    t.equal(changed.statusCode, 200, changed.body)
    t.same(changed.data.followUp, { templateId: childTemplate, waitForCompletion: true })
  })

  await t.test('without waitForCompletion the step is done when the child starts, which records its parent', async (t) => {
    const parentTemplate = await rt.template([
      { kind: 'followUpProcess', name: 'Open the owner process', refersTo: { property: true }, followUp: { templateId: childTemplate } },
      { kind: 'task', name: 'File it' }
    ])
    const parent = await rt.start(parentTemplate)
    t.same(states(parent), ['due', 'pending'])
    t.same(parent.steps[0].followUp, { templateId: childTemplate, waitForCompletion: false })
    const run = await rt.scheduler.runOnce()
    t.equal(run.automaticSteps, 1)
    const after = await rt.instance(parent.id)
    t.same(states(after), ['done', 'due'])
    const [child] = await childrenOf(parent.id)
    t.equal(child.parentId, parent.id)
    t.equal(child.parentStepId, parent.steps[0].id)
    t.equal(child.templateId, childTemplate)
    t.equal(child.responsibleUserId, rt.worker.id)
    t.equal(child.propertyId, rt.propertyId)
    t.equal(child.status, 'running')
    const parentLog = (await rt.api.get(`/v1/process-instances/${parent.id}/activities`)).data.items
    t.ok(parentLog.some((a: { kind: string; data: { childId?: string } }) => a.kind === 'followUpStarted' && a.data.childId === child.id), 'the parent logs the child')
    const childLog = (await rt.api.get(`/v1/process-instances/${child.id}/activities`)).data.items
    t.ok(childLog.some((a: { kind: string; message: string; data: { parentId?: string } }) => a.kind === 'processStarted' && a.data.parentId === parent.id
      && a.message.includes(`by step "Open the owner process" of process "Re-value a property" (${parent.id})`)), 'the child logs its parent')
  })

  await t.test('with waitForCompletion the step runs until the child completes', async (t) => {
    const parentTemplate = await rt.template([
      { kind: 'followUpProcess', name: 'Wait for the owner process', followUp: { templateId: childTemplate, waitForCompletion: true } },
      { kind: 'task', name: 'File it' }
    ])
    const parent = await rt.start(parentTemplate)
    await rt.scheduler.runOnce()
    t.same(states(await rt.instance(parent.id)), ['running', 'pending'])
    const early = await rt.api.post(`/v1/process-instances/${parent.id}/advance`, { outcome: 'done' })
    t.equal(early.statusCode, 409, 'a step waiting for its process cannot be marked done')
    t.match(early.data.detail, /waits for its follow-up process/, 'and the answer says why, not that a webhook call is in flight')
    t.notMatch(early.data.detail, /webhook/)
    const [child] = await childrenOf(parent.id)
    const done = await rt.api.post(`/v1/process-instances/${child.id}/advance`, { outcome: 'done' })
    t.equal(done.statusCode, 200, done.body)
    t.equal(done.data.status, 'completed')
    const run = await rt.scheduler.runOnce()
    t.equal(run.automaticSteps, 1)
    t.same(states(await rt.instance(parent.id)), ['done', 'due'])
  })

  await t.test('a tenant being deleted has no follow-up ended: its step whose process completed runs on while the deletion waits, another tenant\'s ends', async (t) => {
    const waitingParent = async (processes: Processes) => {
      const child = await processes.template([{ kind: 'task', name: 'Tell the owner' }])
      return (await processes.start(await processes.template([
        { kind: 'followUpProcess', name: 'Wait for the owner process', followUp: { templateId: child, waitForCompletion: true } },
        { kind: 'task', name: 'File it' }
      ]))).id as string
    }
    const going = await rt.newRuntimeTenant('Going GmbH')
    const parents: [Client, string][] = [[going.tenant.client, await waitingParent(going)], [rt.api, await waitingParent(rt)]]
    await rt.scheduler.runOnce()
    for (const [api, parent] of parents) {
      const [child] = (await api.get(`/v1/process-instances?parentId=${parent}`)).data.items
      t.equal((await api.post(`/v1/process-instances/${child.id}/advance`, { outcome: 'done' })).data.status, 'completed')
    }
    const deletion = await heldDeletion(rt, going.tenant.id)
    t.equal((await rt.scheduler.runOnce()).automaticSteps, 1, 'one follow-up ended')
    t.same(states(await rt.instance(parents[1]![1])), ['done', 'due'], 'the other tenant\'s')
    const { rows } = await sql<{ state: string }>`select state from instance_steps where instance_id = ${parents[0]![1]} order by position`.execute(rt.db)
    t.same(rows.map((row) => row.state), ['running', 'pending'], 'the going tenant\'s step runs on until the deletion takes it')
    t.equal((await deletion.finish()).statusCode, 204)
  })

  await t.test('with waitForCompletion a cancelled child fails the step into a manual one and mails the controller', async (t) => {
    const parentTemplate = await rt.template([
      { kind: 'followUpProcess', name: 'Wait for the valuation process', followUp: { templateId: childTemplate, waitForCompletion: true } }
    ])
    const parent = await rt.start(parentTemplate)
    await rt.scheduler.runOnce()
    const [child] = await childrenOf(parent.id)
    const cancelled = await rt.api.post(`/v1/process-instances/${child.id}/cancel`, { note: 'Owner withdrew' })
    t.equal(cancelled.statusCode, 200, cancelled.body)
    await rt.scheduler.runOnce()
    const after = await rt.instance(parent.id)
    t.same(states(after), ['failed'])
    t.ok(rt.smtp.mails.some((m) => m.subject.includes('Wait for the valuation process')), 'the controller is mailed')
    const advanced = await rt.api.post(`/v1/process-instances/${parent.id}/advance`, { outcome: 'done', note: 'Handled by hand' })
    t.equal(advanced.statusCode, 200, advanced.body)
    t.equal(advanced.data.status, 'completed')
  })

  await t.test('a waiting follow-up step can be skipped, and its process cancelled', async (t) => {
    const parentTemplate = await rt.template([
      { kind: 'followUpProcess', name: 'Wait', followUp: { templateId: childTemplate, waitForCompletion: true } },
      { kind: 'task', name: 'Next' }
    ])
    const first = await rt.start(parentTemplate)
    const second = await rt.start(parentTemplate)
    await rt.scheduler.runOnce()
    const skipped = await rt.api.post(`/v1/process-instances/${first.id}/advance`, { outcome: 'skipped' })
    t.equal(skipped.statusCode, 200, skipped.body)
    t.same(states(skipped.data), ['skipped', 'due'])
    const cancelled = await rt.api.post(`/v1/process-instances/${second.id}/cancel`, {})
    t.equal(cancelled.statusCode, 200, cancelled.body)
    const [child] = await childrenOf(second.id)
    t.equal(child.status, 'running', 'the child goes on')
  })

  await t.test('an inactive or deleted target template fails the step into a manual one and mails the controller', async (t) => {
    const target = await rt.template([{ kind: 'task', name: 'Soon inactive' }])
    const parentTemplate = await rt.template([{ kind: 'followUpProcess', name: 'Start the inactive one', followUp: { templateId: target } }])
    const version = (await rt.api.get(`/v1/process-templates/${target}`)).data.version
    const off = await rt.api.patch(`/v1/process-templates/${target}`, { active: false }, { 'if-match': `"${version}"` })
    t.equal(off.statusCode, 200, off.body)
    const parent = await rt.start(parentTemplate)
    const mailsBefore = rt.smtp.mails.length
    await rt.scheduler.runOnce()
    const after = await rt.instance(parent.id)
    t.same(states(after), ['failed'])
    t.same(await childrenOf(parent.id), [])
    const log = (await rt.api.get(`/v1/process-instances/${parent.id}/activities`)).data.items
    t.ok(log.some((a: { kind: string; message: string }) => a.kind === 'automaticStepFailed' && /not active/.test(a.message)), 'the reason is logged')
    const mails = rt.smtp.mails.slice(mailsBefore).filter((m) => m.subject.includes('Start the inactive one'))
    t.equal(mails.length, 1, 'one mail to the controller')
    t.same(mails[0]?.to, [rt.controller.email])

    const doomed = await rt.template([{ kind: 'task', name: 'Soon gone' }])
    const orphanTemplate = await rt.template([{ kind: 'followUpProcess', name: 'Start the deleted one', followUp: { templateId: doomed } }])
    t.equal((await rt.api.delete(`/v1/process-templates/${doomed}`)).statusCode, 204)
    const orphan = await rt.start(orphanTemplate)
    await rt.scheduler.runOnce()
    t.same(states(await rt.instance(orphan.id)), ['failed'])
    const orphanLog = (await rt.api.get(`/v1/process-instances/${orphan.id}/activities`)).data.items
    t.ok(orphanLog.some((a: { kind: string; message: string }) => a.kind === 'automaticStepFailed' && /does not exist\.$/.test(a.message)), 'a deleted template too, in one sentence')

    // Known gone, it does not come back: a template naming it is not activated again (every process would fail there).
    const orphanVersion = (await rt.api.get(`/v1/process-templates/${orphanTemplate}`)).data.version
    t.equal((await rt.api.patch(`/v1/process-templates/${orphanTemplate}`, { active: false }, { 'if-match': `"${orphanVersion}"` })).statusCode, 200)
    const again = await rt.api.patch(`/v1/process-templates/${orphanTemplate}`, { active: true })
    t.equal(again.statusCode, 422, again.body)
    t.match(again.data.errors, [{ pointer: '/body/active', detail: new RegExp(`step 1 "Start the deleted one" .*followUp/templateId template ${doomed} does not exist`) }])
  })

  await t.test('a target whose steps need an address the process lacks fails the step at run time', async (t) => {
    const target = await rt.template([{ kind: 'task', name: 'Write to the buyer', refersTo: { address: true } }])
    const parentTemplate = await rt.template([{ kind: 'followUpProcess', name: 'Start the buyer process', followUp: { templateId: target } }])
    const parent = await rt.start(parentTemplate)
    await rt.scheduler.runOnce()
    const log = (await rt.api.get(`/v1/process-instances/${parent.id}/activities`)).data.items
    t.ok(log.some((a: { kind: string; message: string }) => a.kind === 'automaticStepFailed' && /refers to the address/.test(a.message)), 'the reason names the address')
  })

  await t.test('two schedulers running at once start one child', async (t) => {
    const parentTemplate = await rt.template([{ kind: 'followUpProcess', name: 'Once', followUp: { templateId: childTemplate } }])
    const parents = await Promise.all([1, 2, 3, 4, 5].map(() => rt.start(parentTemplate)))
    const [a, b] = [rt.newScheduler(), rt.newScheduler()]
    await Promise.all([a.runOnce(), b.runOnce()])
    for (const parent of parents) {
      t.equal((await childrenOf(parent.id)).length, 1, `one child of ${parent.id}`)
      t.equal((await rt.instance(parent.id)).status, 'completed')
    }
  })
})
