import t from 'tap'
import { refuseActivitiesWhere } from '../helpers/database.js'
import { setupRuntime } from '../helpers/runtime.js'

// Waiting follow-up steps end in one transaction for a batch; one whose ending fails on its own (here a
// trigger the test adds refuses its activity) must not hold back the others, nor fail on every pass.
const rt = await setupRuntime(t)
const failures: unknown[] = []
const scheduler = rt.newScheduler({}, { info() {}, warn() {}, error: (fields: unknown) => { failures.push(fields) } })
const states = (view: { steps: { state: string }[] }) => view.steps.map((s) => s.state)

t.test('a follow-up whose ending fails alone fails into a manual step; the others end', async (t) => {
  const childTemplate = await rt.template([{ kind: 'task', name: 'Child task' }], { notifyOnCompletion: false })
  const parentTemplate = await rt.template([
    { kind: 'followUpProcess', name: 'Wait for the child', followUp: { templateId: childTemplate, waitForCompletion: true } },
    { kind: 'task', name: 'After the child' }
  ])
  const fine = await rt.start(parentTemplate)
  const poisoned = await rt.start(parentTemplate)
  await scheduler.runOnce()
  const childOf = async (id: string) => (await rt.api.get(`/v1/process-instances?parentId=${id}`)).data.items[0].id as string
  const [fineChild, poisonedChild] = [await childOf(fine.id), await childOf(poisoned.id)]
  for (const child of [fineChild, poisonedChild]) {
    t.equal((await rt.api.post(`/v1/process-instances/${child}/advance`, { outcome: 'done' })).statusCode, 200, 'the child completes')
  }

  await refuseActivitiesWhere(t, rt.db, `new.data->>'childId' = '${poisonedChild}'`)

  await scheduler.runOnce()
  t.same(states(await rt.instance(fine.id)), ['done', 'due'], 'the other follow-up ended and the next step started')
  t.same(states(await rt.instance(poisoned.id)), ['failed', 'pending'], 'the one that fails alone is a manual step now')
  t.ok(failures.length > 0, 'its failure was logged')
  failures.length = 0
  await scheduler.runOnce()
  t.same(failures, [], 'and it is not tried again on every pass')
  t.equal((await rt.api.post(`/v1/process-instances/${poisoned.id}/advance`, { outcome: 'done' })).statusCode, 200, 'a person resolves it')
})
