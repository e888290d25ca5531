import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { settleStepMails } from '../../src/scheduler/email-steps.js'
import { runAutomaticSteps } from '../../src/scheduler/automatic-steps/run-automatic-steps.js'
import { refuseActivitiesWhere } from '../helpers/database.js'
import { heldDeletion } from '../helpers/deletion.js'
import { setupRuntime } from '../helpers/runtime.js'

// Email steps hear of their mails in one transaction for a batch; a mail whose settling fails on its
// own (here a trigger the test adds refuses its activity) must not hold back every other step's mail.
const rt = await setupRuntime(t)

const mailStep = (subject: string) => ({
  kind: 'email', name: `Mail ${subject}`, refersTo: { property: true, address: false },
  email: { mode: 'automatic', to: { address: 'owner@example.com' }, subject, body: 'Hello' }
})

t.test('a mail whose settling fails alone fails its own step into a manual one; the others are settled', async (t) => {
  await refuseActivitiesWhere(t, rt.db, "new.data->>'subject' = 'Poison'")

  const fine = await rt.start(await rt.template([mailStep('Fine'), { kind: 'task', name: 'After the fine mail' }]))
  const poison = await rt.start(await rt.template([mailStep('Poison'), { kind: 'task', name: 'After the poisoned mail' }]))
  await rt.scheduler.runOnce()
  t.same(rt.smtp.mails.map((m) => m.subject).filter((s) => s === 'Fine' || s === 'Poison').sort(), ['Fine', 'Poison'], 'both mails went out')

  t.same((await rt.instance(fine.id)).steps.map((s: { state: string }) => s.state), ['done', 'due'], 'the fine mail\'s step is done and the next started')
  const poisoned = await rt.instance(poison.id)
  t.same(poisoned.steps.map((s: { state: string }) => s.state), ['failed', 'pending'], 'the other step failed into a manual one, not left running')
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from outbox_mails where settle_step`.execute(rt.db)
  t.equal(rows[0]!.n, 0, 'no mail is left to settle on every pass')
  t.ok(rt.smtp.mails.some((m) => m.subject.startsWith('Automatic step failed: "Mail Poison"')), 'and its controller is told, as for any step that fails')
  t.equal((await rt.api.post(`/v1/process-instances/${poison.id}/advance`, { outcome: 'done' })).statusCode, 200, 'a person resolves it')
})

t.test('a tenant being deleted has no email step settled: its step whose mail went out runs on while the deletion waits, another tenant\'s is done', async (t) => {
  const going = await rt.newRuntimeTenant('Going GmbH')
  const steps = [mailStep('Before the deletion'), { kind: 'task', name: 'After the mail' }]
  const goingId = (await going.start(await going.template(steps))).id
  const stayingId = (await rt.start(await rt.template(steps))).id
  await runAutomaticSteps(rt.db, rt.clock.now(), 100)
  // Both mails went out before the deletion began; their steps have not heard of it yet.
  await sql`update outbox_mails set sent_at = ${rt.clock.now()} where subject = 'Before the deletion'`.execute(rt.db)
  const deletion = await heldDeletion(rt, going.tenant.id)
  t.equal(await settleStepMails(rt.db, rt.clock.now(), 100), 1, 'one mail settled')
  t.same((await rt.instance(stayingId)).steps.map((s: { state: string }) => s.state), ['done', 'due'], 'the other tenant\'s step is done')
  const { rows } = await sql<{ state: string }>`select state from instance_steps where instance_id = ${goingId} order by position`.execute(rt.db)
  t.same(rows.map((row) => row.state), ['running', 'pending'], 'the going tenant\'s step runs on until the deletion takes it')
  t.equal((await deletion.finish()).statusCode, 204)
})
