import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { renderBody, renderSubject, type EmailView } from '../../src/modules/templates/steps/email.js'
import { removeOldHistory } from '../../src/scheduler/remove-old-history.js'
import { DAY, HOUR, MINUTE } from '../helpers/clock.js'
import { setupRuntime } from '../helpers/runtime.js'

// One runtime for the file; each test names its own steps and counts only the mails about them.
const rt = await setupRuntime(t)

const mailsTo = (address: string) => rt.smtp.mails.filter((m) => m.to.includes(address))
const mailsAbout = (text: string) => rt.smtp.mails.filter((m) => m.subject.includes(text))
const states = (view: { steps: { state: string }[] }) => view.steps.map((s) => s.state)

let owners = 0
/** An address of an owner with an e-mail of its own (unless `fields` says otherwise). */
async function owner(fields: Record<string, unknown> = {}): Promise<{ id: string; email: string }> {
  owners += 1
  const email = `owner${owners}@example.com`
  const created = await rt.api.post('/v1/addresses', { fields: { firstName: 'Olga', lastName: `Owner${owners}`, email, ...fields } })
  if (created.statusCode !== 201) throw new Error(created.body)
  return { id: created.data.id, email }
}

const tellOwner = (name: string, extra: Record<string, unknown> = {}) => ({
  kind: 'email',
  name,
  refersTo: { property: true, address: true },
  email: {
    mode: 'automatic',
    to: 'addressEmail',
    subject: `${name}: {{property.fields.street}}`,
    body: 'Dear {{address.fields.firstName}} {{address.fields.lastName}},\n\nthe price of {{property.fields.street}} is {{property.fields.price}} EUR.' +
      '{{#address.fields.nickname}} ({{address.fields.nickname}}){{/address.fields.nickname}}\n' +
      'Process {{process.templateName}} ({{process.id}}), step {{step.name}}, missing:[{{address.fields.missing}}]\n' +
      '{{assignee.name}} for {{controller.name}}, {{responsible.name}}, {{tenant.name}}'
  },
  ...extra
})

t.test('an automatic e-mail is sent when its step starts; once the SMTP server took it the step is done and the next one starts', async (t) => {
  const address = await owner()
  await rt.api.patch(`/v1/properties/${rt.propertyId}`, { fields: { street: 'Müller & Söhne <Hof> 1' } })
  const templateId = await rt.template([tellOwner('Tell the owner'), { kind: 'task', name: 'Call the owner afterwards' }])

  const template = await rt.api.get(`/v1/process-templates/${templateId}`)
  t.match(template.data.steps[0].email, { mode: 'automatic', to: 'addressEmail' }, 'the template shows the mail')
  t.equal(template.data.steps[1].email, null, 'a task has none')

  const started = await rt.start(templateId, { addressId: address.id })
  t.same(states(started), ['due', 'pending'], 'the e-mail step is due at once')
  t.match(started.steps[0].email, { mode: 'automatic', to: 'addressEmail', subject: 'Tell the owner: {{property.fields.street}}' }, 'the instance step shows its mail')

  const run = await rt.scheduler.runOnce()
  t.equal(run.automaticSteps, 1, 'the scheduler carried the step out')
  const mails = mailsTo(address.email)
  t.equal(mails.length, 1, 'one mail to the address\'s e-mail field')
  const mail = mails[0]!
  t.equal(mail.subject, 'Tell the owner: Müller & Söhne <Hof> 1', 'placeholders filled, nothing HTML-escaped in plain text')
  t.notMatch(mail.raw, /^auto-submitted:/im, 'the tenant\'s message to its recipient, not marked as Baton\'s notice')
  t.match(mail.text, `Dear Olga ${(await rt.api.get(`/v1/addresses/${address.id}`)).data.fields.lastName},`)
  t.match(mail.text, 'the price of Müller & Söhne <Hof> 1 is 450000 EUR.')
  t.match(mail.text, '450000 EUR.\r\n', 'a section over a missing field shows nothing')
  t.match(mail.text, `Process Re-value a property (${started.id}), step Tell the owner, missing:[]`, 'a missing field renders empty')
  t.match(mail.text, 'Willi Worker for Clara Controller, Willi Worker, Muster Immobilien')

  const view = await rt.instance(started.id)
  t.same(states(view), ['done', 'due'], 'the step is done and the next one started')
  const activities = await rt.api.get(`/v1/addresses/${address.id}/activities`)
  const sent = activities.data.items.find((a: { kind: string }) => a.kind === 'emailSent')
  t.ok(sent, 'an activity on the address says so')
  t.match(sent.message, `sent to ${address.email}`)
  const onProperty = await rt.api.get(`/v1/properties/${rt.propertyId}/activities?limit=100`)
  t.ok(onProperty.data.items.some((a: { kind: string; instanceId: string }) => a.kind === 'emailSent' && a.instanceId === started.id), 'and on the property')

  t.equal((await rt.scheduler.runOnce()).mails, 0, 'nothing is sent twice')
  t.equal(mailsTo(address.email).length, 1)
})

t.test('two automatic e-mails in a row, then the process completes', async (t) => {
  const address = await owner()
  const templateId = await rt.template([
    tellOwner('First note'),
    { kind: 'email', name: 'Second note', email: { mode: 'automatic', to: 'controller', subject: 'Done with {{process.id}}', body: 'Sent.' } }
  ])
  const started = await rt.start(templateId, { addressId: address.id })
  await rt.scheduler.runOnce()
  await rt.scheduler.runOnce()
  const view = await rt.instance(started.id)
  t.same(states(view), ['done', 'done'])
  t.equal(view.status, 'completed')
  t.equal(mailsAbout(`Done with ${started.id}`).length, 1, 'the controller got the second mail')
  t.same(mailsAbout(`Done with ${started.id}`)[0]!.to, [rt.controller.email])
})

t.test('a subject longer than 500 characters is cut between characters, never inside one', async (t) => {
  // 'Cut:a' and then emoji (two UTF-16 units each): a cut at 500 units used to keep half of an emoji,
  // which went out as U+FFFD at the end of the subject.
  const propertyId = (await rt.api.post('/v1/properties', { maintainerUserId: rt.worker.id, fields: { title: '😀'.repeat(300) } })).data.id
  const templateId = await rt.template([{
    kind: 'email', name: 'Long subject', refersTo: { property: true },
    email: { mode: 'automatic', to: 'controller', subject: 'Cut:a{{property.fields.title}}', body: 'See the subject.' }
  }])
  const started = await rt.start(templateId, { propertyId })
  await rt.scheduler.runOnce()
  t.equal((await rt.instance(started.id)).steps[0].state, 'done')
  const mail = mailsAbout('Cut:a')[0]
  t.equal(mail?.subject, 'Cut:a' + '😀'.repeat(247), 'cut to 499 units, the whole emoji before the cut kept')
})

t.test('a subject is rendered on one line: every line break a field holds becomes a space, Unicode\'s too', async (t) => {
  // CR, LF and tab were collapsed, but not the other characters that break a line (VT, FF, NEL, LS, PS),
  // which a mail client shows as line breaks in the subject it decodes.
  const propertyId = (await rt.api.post('/v1/properties', { maintainerUserId: rt.worker.id, fields: { street: 'A\u2028B\u0085C\u000bD\u000cE\u2029\r\nF' } })).data.id
  const templateId = await rt.template([{
    kind: 'email', name: 'One line', refersTo: { property: true },
    email: { mode: 'automatic', to: 'controller', subject: 'Lines: {{property.fields.street}}', body: 'See the subject.' }
  }])
  await rt.start(templateId, { propertyId })
  await rt.scheduler.runOnce()
  t.equal(mailsAbout('Lines:')[0]?.subject, 'Lines: A B C D E F')
})

t.test('no address to mail: the step fails into a manual one and the controller hears of it', async (t) => {
  const templateId = await rt.template([tellOwner('Mail the missing owner'), { kind: 'task', name: 'After the missing owner' }])
  const moved = await owner()
  const withoutAddress = await rt.start(templateId, { addressId: moved.id })
  const patched = await rt.api.patch(`/v1/addresses/${moved.id}`, { fields: { email: null } })
  t.equal(patched.statusCode, 200, 'the address loses its e-mail before the step runs')
  const emptyField = await rt.start(templateId, { addressId: (await owner({ email: '' })).id })
  const notAnAddress = await rt.start(templateId, { addressId: (await owner({ email: 'call me maybe' })).id })

  const run = await rt.scheduler.runOnce()
  t.equal(run.automaticSteps, 3)
  for (const [instance, why] of [[withoutAddress, /has no e-mail/], [emptyField, /field "email" is empty/], [notAnAddress, /not an e-mail address/]] as const) {
    const view = await rt.instance(instance.id)
    t.same(states(view), ['failed', 'pending'], 'the step failed into a manual one')
    const activities = await rt.api.get(`/v1/process-instances/${instance.id}/activities`)
    const failed = activities.data.items.find((a: { kind: string }) => a.kind === 'automaticStepFailed')
    t.match(failed?.message, why)
  }
  const alerts = mailsAbout('Automatic step failed: "Mail the missing owner"')
  t.equal(alerts.length, 3, 'one mail to the controller per step')
  t.same(alerts[0]!.to, [rt.controller.email])
  // RFC 3834: an out-of-office reply is not sent back for it.
  t.match(alerts[0]!.raw, /^Auto-Submitted: auto-generated\r?$/m, 'the controller\'s mail is marked as Baton\'s own notice')

  const done = await rt.api.post(`/v1/process-instances/${withoutAddress.id}/advance`, { outcome: 'done', note: 'Phoned instead' })
  t.equal(done.statusCode, 200, 'the manual step is done by hand')
  t.same(states(done.data), ['done', 'due'])
  const withMail = await rt.api.post(`/v1/process-instances/${emptyField.id}/advance`, { outcome: 'done', email: { subject: 'Again' } })
  t.equal(withMail.statusCode, 422, 'a failed automatic step sends nothing when done by hand')
})

t.test('the SMTP server refuses the recipient for good: the step fails into a manual one, and the mail is not tried again', async (t) => {
  rt.smtp.refusedRecipients.add('nobody@example.com')
  const templateId = await rt.template([
    { kind: 'email', name: 'Mail a dead mailbox', email: { mode: 'automatic', to: { address: 'nobody@example.com' }, subject: 'Hello', body: 'Hi' } },
    { kind: 'task', name: 'After the dead mailbox' }
  ])
  const started = await rt.start(templateId)
  await rt.scheduler.runOnce()

  const view = await rt.instance(started.id)
  t.same(states(view), ['failed', 'pending'])
  const activities = await rt.api.get(`/v1/process-instances/${started.id}/activities`)
  t.match(activities.data.items.find((a: { kind: string }) => a.kind === 'automaticStepFailed')?.message, /refused the e-mail to nobody@example\.com.*550/)
  t.equal(mailsAbout('Automatic step failed: "Mail a dead mailbox"').length, 1, 'the controller hears of it')

  const { rows } = await sql<{ attempt_count: number; failed_at: Date | null; sent_at: Date | null }>`
    select attempt_count, failed_at, sent_at from outbox_mails where step_id = ${view.steps[0].id}`.execute(rt.db)
  t.match(rows, [{ attempt_count: 1, sent_at: null }])
  t.ok(rows[0]!.failed_at, 'given up')
  rt.clock.advance(60 * MINUTE)
  await rt.scheduler.runOnce()
  const again = await sql<{ attempt_count: number }>`select attempt_count from outbox_mails where step_id = ${view.steps[0].id}`.execute(rt.db)
  t.equal(again.rows[0]!.attempt_count, 1, 'not tried again')
  t.same(states(await rt.instance(started.id)), ['failed', 'pending'])
})

t.test('a refusal whose text is cut inside a character still fails the step, and other steps\' mails still settle', async (t) => {
  // The server's answer is shown up to 300 units in the step's failure; a cut inside an emoji (two
  // UTF-16 units) left its lone half, which jsonb refuses: the transaction that settles step mails
  // failed on every pass, for every tenant's email steps. Two texts, one for each parity of the cut.
  rt.smtp.refusedRecipients.add('emoji@example.com')
  t.teardown(() => {
    rt.smtp.refusedRecipients.delete('emoji@example.com')
    rt.smtp.refusalText = 'No such mailbox'
  })
  for (const refusal of ['😀'.repeat(200), `x${'😀'.repeat(200)}`]) {
    rt.smtp.refusalText = refusal
    const templateId = await rt.template([
      { kind: 'email', name: 'Mail the emoji mailbox', email: { mode: 'automatic', to: { address: 'emoji@example.com' }, subject: 'Hello', body: 'Hi' } }
    ])
    const other = await rt.template([{ kind: 'email', name: 'Mail the controller', email: { mode: 'automatic', to: 'controller', subject: 'Fine', body: 'Hi' } }])
    const started = await rt.start(templateId)
    const fine = await rt.start(other)
    await rt.scheduler.runOnce()
    await rt.scheduler.runOnce()
    t.same(states(await rt.instance(started.id)), ['failed'], 'the refused mail fails its step')
    t.same(states(await rt.instance(fine.id)), ['done'], 'the other mail settles too')
    const activities = (await rt.api.get(`/v1/process-instances/${started.id}/activities`)).data.items
    t.match(activities, [{ kind: 'automaticStepFailed', message: /the mail server refused the e-mail to emoji@example\.com \(.*😀\)/ }])
  }
})

t.test('a server that refuses every sender (530, not set up for Baton): the step keeps running and its mail is retried, not given up', async (t) => {
  const templateId = await rt.template([
    { kind: 'email', name: 'Mail through a misconfigured server', email: { mode: 'automatic', to: 'assignee', subject: 'Sender {{process.id}}', body: 'Hi' } }
  ])
  const started = await rt.start(templateId)
  rt.smtp.refusingSenders = true
  t.teardown(() => { rt.smtp.refusingSenders = false })
  await rt.scheduler.runOnce()
  const { rows } = await sql<{ attempt_count: number; failed_at: Date | null }>`
    select attempt_count, failed_at from outbox_mails where step_id = ${started.steps[0].id}`.execute(rt.db)
  // A 5xx to MAIL FROM says nothing of this mail or its recipient: every mail would get it, each step failing for good.
  t.match(rows, [{ attempt_count: 1, failed_at: null }], 'tried once, kept queued')
  t.same(states(await rt.instance(started.id)), ['running'], 'running while the mail waits')

  rt.smtp.refusingSenders = false
  rt.clock.advance(MINUTE)
  await rt.scheduler.runOnce()
  t.same(states(await rt.instance(started.id)), ['done'], 'done once the server takes it')
  t.equal(mailsAbout(`Sender ${started.id}`).length, 1)
  t.equal(mailsAbout('Automatic step failed: "Mail through a misconfigured server"').length, 0, 'the controller is not told of a failure')
})

t.test('a server that keeps refusing: after 8 attempts the step fails into a manual one; the retention removes the mail later', async (t) => {
  const templateId = await rt.template([
    { kind: 'email', name: 'Mail through a broken server', email: { mode: 'automatic', to: 'controller', subject: 'Broken {{process.id}}', body: 'Hi' } }
  ])
  const started = await rt.start(templateId)
  const stepId = started.steps[0].id
  rt.smtp.refusing = true
  t.teardown(() => { rt.smtp.refusing = false })
  const attempts = async () => (await sql<{ attempt_count: number; failed_at: Date | null }>`
    select attempt_count, failed_at from outbox_mails where step_id = ${stepId}`.execute(rt.db)).rows[0]!
  for (let i = 1; i <= 7; i++) {
    await rt.scheduler.runOnce()
    t.match(await attempts(), { attempt_count: i, failed_at: null }, `attempt ${i} failed, retried later`)
    t.same(states(await rt.instance(started.id)), ['running'])
    rt.clock.advance(HOUR)
  }
  await rt.scheduler.runOnce()
  t.equal((await attempts()).attempt_count, 8)
  t.ok((await attempts()).failed_at, 'the eighth failure gives it up')
  t.same(states(await rt.instance(started.id)), ['failed'])
  rt.smtp.refusing = false
  rt.clock.advance(MINUTE)
  await rt.scheduler.runOnce()
  t.equal(mailsAbout('Automatic step failed: "Mail through a broken server"').length, 1, 'the controller hears of it once the server is back')
  t.equal(mailsAbout(`Broken ${started.id}`).length, 0)

  await removeOldHistory(rt.db, new Date(rt.clock.now().getTime() + 91 * DAY), 90)
  const left = await sql<{ n: number }>`select count(*)::int as n from outbox_mails where step_id = ${stepId}`.execute(rt.db)
  t.equal(left.rows[0]!.n, 0, 'the given-up mail goes with the retention')
})

t.test('a server that refuses for a while: the step keeps running, then is done once the mail goes through', async (t) => {
  const templateId = await rt.template([
    { kind: 'email', name: 'Mail through a busy server', email: { mode: 'automatic', to: 'assignee', subject: 'Busy {{step.name}}', body: 'Hi' } }
  ])
  const started = await rt.start(templateId)
  rt.smtp.refusing = true
  await rt.scheduler.runOnce()
  t.same(states(await rt.instance(started.id)), ['running'], 'running while the mail waits')
  rt.smtp.refusing = false
  rt.clock.advance(MINUTE)
  await rt.scheduler.runOnce()
  const view = await rt.instance(started.id)
  t.same(states(view), ['done'])
  t.equal(mailsAbout('Busy Mail through a busy server').length, 1)
  t.same(mailsAbout('Busy Mail through a busy server')[0]!.to, [rt.worker.email], 'to the assignee')
})

t.test('two schedulers at once: one mail per step', async (t) => {
  const templateId = await rt.template([
    { kind: 'email', name: 'Race', email: { mode: 'automatic', to: 'controller', subject: 'Race {{process.id}}', body: 'Once.' } },
    { kind: 'task', name: 'After the race' }
  ])
  const ids: string[] = []
  for (let i = 0; i < 6; i++) ids.push((await rt.start(templateId)).id)
  const [a, b] = [rt.newScheduler(), rt.newScheduler()]
  const runs = await Promise.all([a.runOnce(), b.runOnce()])
  t.equal(runs[0].automaticSteps + runs[1].automaticSteps, 6, 'each step carried out by one of them')
  await Promise.all([a.runOnce(), b.runOnce()])
  for (const id of ids) {
    t.equal(mailsAbout(`Race ${id}`).length, 1, 'one mail')
    t.same(states(await rt.instance(id)), ['done', 'due'])
  }
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from outbox_mails where kind = 'emailStep' and subject like 'Race %'`.execute(rt.db)
  t.equal(rows[0]!.n, 6, 'one outbox row per step')
})

t.test('a manual e-mail is sent by its assignee advancing it, optionally with edited texts', async (t) => {
  const address = await owner()
  const manual = {
    kind: 'email', name: 'Offer a viewing', refersTo: { property: true, address: true },
    email: { mode: 'manual', to: 'addressEmail', subject: 'Viewing of {{property.fields.street}}', body: 'Dear {{address.fields.firstName}}, when suits you?' }
  }
  const templateId = await rt.template([manual, { kind: 'task', name: 'After the viewing offer' }])
  const started = await rt.start(templateId, { addressId: address.id })
  t.same(states(started), ['due', 'pending'])
  await rt.scheduler.runOnce()
  t.same(states(await rt.instance(started.id)), ['due', 'pending'], 'the scheduler leaves a manual step to its assignee')
  t.equal(mailsTo(address.email).length, 0)

  const bad = await rt.api.post(`/v1/process-instances/${started.id}/advance`, { outcome: 'done', email: { subject: 'Hi {{nobody.name}}' } })
  t.equal(bad.statusCode, 422, bad.body)
  t.equal(bad.data.errors[0].pointer, '/body/email/subject')
  const shape = await rt.api.post(`/v1/process-instances/${started.id}/advance`, { outcome: 'done', email: { subject: 'Hi', cc: 'x@example.com' } })
  t.equal(shape.statusCode, 400, 'an unknown field is a bad request')

  const done = await rt.api.post(`/v1/process-instances/${started.id}/advance`,
    { outcome: 'done', email: { subject: 'Viewing of {{property.fields.street}} this week' } })
  t.equal(done.statusCode, 200, done.body)
  t.same(states(done.data), ['done', 'due'], 'done and the next step started in the same commit')
  const { rows } = await sql<{ subject: string; to_address: string }>`select subject, to_address from outbox_mails where step_id = ${started.steps[0].id}`.execute(rt.db)
  t.match(rows, [{ to_address: address.email, subject: /this week$/ }], 'the mail was queued with the edited subject')

  await rt.scheduler.runOnce()
  const mails = mailsTo(address.email)
  t.equal(mails.length, 1)
  t.match(mails[0]!.subject, /^Viewing of .* this week$/)
  t.equal(mails[0]!.text.trim(), 'Dear Olga, when suits you?', 'the body as the step has it')
  const activities = await rt.api.get(`/v1/process-instances/${started.id}/activities`)
  t.ok(activities.data.items.some((a: { kind: string }) => a.kind === 'emailSent'), 'an activity says it was sent')

  const second = await rt.start(templateId, { addressId: address.id })
  const skipped = await rt.api.post(`/v1/process-instances/${second.id}/advance`, { outcome: 'skipped' })
  t.equal(skipped.statusCode, 200)
  await rt.scheduler.runOnce()
  t.equal(mailsTo(address.email).length, 1, 'skipping sends nothing')

  const noAddress = await rt.start(templateId, { addressId: (await owner({ email: null })).id })
  const refused = await rt.api.post(`/v1/process-instances/${noAddress.id}/advance`, { outcome: 'done' })
  t.equal(refused.statusCode, 409, 'no address to mail: the advance is refused')
  t.match(refused.data.detail, /has no e-mail/)

  const taskEdit = await rt.api.post(`/v1/process-instances/${second.id}/advance`, { outcome: 'done', email: { body: 'x' } })
  t.equal(taskEdit.statusCode, 422, 'a task sends no mail')
})

t.test('two advances of a manual e-mail step at once: one wins, one mail', async (t) => {
  const templateId = await rt.template([
    { kind: 'email', name: 'Race by hand', email: { mode: 'manual', to: 'controller', subject: 'By hand {{process.id}}', body: 'x' } },
    { kind: 'task', name: 'After the race by hand' }
  ])
  const started = await rt.start(templateId)
  const advance = () => rt.api.post(`/v1/process-instances/${started.id}/advance`, { outcome: 'done', stepId: started.steps[0].id })
  const answers = await Promise.all([advance(), advance()])
  t.same(answers.map((a) => a.statusCode).sort(), [200, 409], 'one advance wins, the other is told the step moved on')
  await rt.scheduler.runOnce()
  t.equal(mailsAbout(`By hand ${started.id}`).length, 1, 'one mail')
  t.same(states(await rt.instance(started.id)), ['done', 'due'])
})

t.test('a process whose e-mail is queued can be cancelled; the mail is withdrawn', async (t) => {
  const templateId = await rt.template([
    { kind: 'email', name: 'Withdrawn', email: { mode: 'automatic', to: 'controller', subject: 'Withdrawn {{process.id}}', body: 'x' } }
  ])
  const started = await rt.start(templateId)
  rt.smtp.refusing = true
  await rt.scheduler.runOnce()
  rt.smtp.refusing = false
  t.same(states(await rt.instance(started.id)), ['running'])
  const cancelled = await rt.api.post(`/v1/process-instances/${started.id}/cancel`, { note: 'Never mind' })
  t.equal(cancelled.statusCode, 200, cancelled.body)
  rt.clock.advance(60 * MINUTE)
  await rt.scheduler.runOnce()
  t.equal(mailsAbout(`Withdrawn ${started.id}`).length, 0, 'the mail never went out')
})

t.test('a body that renders past 1,000,000 characters is not queued: an automatic step fails into a manual one, an advance answers 422', async (t) => {
  const address = await owner()
  const property = await rt.api.post('/v1/properties', { fields: { big: 'x'.repeat(250_000) } })
  const bigMail = (name: string, mode: string, copies: number) => ({
    kind: 'email', name, refersTo: { property: true, address: true },
    email: { mode, to: 'addressEmail', subject: `${name} {{property.fields.big}}`, body: '{{property.fields.big}}'.repeat(copies) }
  })
  const outboxOf = async (stepId: string) =>
    (await sql<{ body: number; subject: number }>`select length(body) as body, length(subject) as subject from outbox_mails where step_id = ${stepId}`.execute(rt.db)).rows
  const linked = { addressId: address.id, propertyId: property.data.id }

  // 100 copies of a 250,000-character field: 25,000,000 characters, stopped at the cap.
  const tooLong = await rt.start(await rt.template([bigMail('Mail the whole field', 'automatic', 100), { kind: 'task', name: 'After the long mail' }]), linked)
  const fits = await rt.start(await rt.template([bigMail('Mail four copies', 'automatic', 4)]), linked)
  await rt.scheduler.runOnce()
  t.same(states(await rt.instance(tooLong.id)), ['failed', 'pending'], 'the step failed into a manual one')
  const activities = (await rt.api.get(`/v1/process-instances/${tooLong.id}/activities`)).data.items
  t.match(activities.find((a: { kind: string }) => a.kind === 'automaticStepFailed')?.message, /body renders to more than 1,000,000 characters/)
  t.same(await outboxOf(tooLong.steps[0].id), [], 'nothing queued')
  t.equal(mailsAbout('Automatic step failed: "Mail the whole field"').length, 1, 'the controller hears of it')
  t.same(await outboxOf(fits.steps[0].id), [{ body: 1_000_000, subject: 500 }], 'exactly the cap is sent, the subject cut to 500 as before')
  t.same(states(await rt.instance(fits.id)), ['done'])

  const manual = await rt.start(await rt.template([bigMail('Send the whole field', 'manual', 100)]), linked)
  const refused = await rt.api.post(`/v1/process-instances/${manual.id}/advance`, { outcome: 'done' })
  t.equal(refused.statusCode, 422, refused.body)
  t.match(refused.data.errors, [{ pointer: '/body/email/body', detail: /renders to more than 1,000,000 characters/ }])
  t.same(await outboxOf(manual.steps[0].id), [])
  const edited = await rt.api.post(`/v1/process-instances/${manual.id}/advance`, { outcome: 'done', email: { body: 'The field is too large to mail; see the CRM.' } })
  t.equal(edited.statusCode, 200, 'a shorter body goes')
  t.same(await outboxOf(manual.steps[0].id), [{ body: 44, subject: 500 }])
})

t.test('rendering stops at the cap inside sections too, and keeps Mustache\'s meaning below it', async (t) => {
  const person = { name: 'Anna', email: 'anna@example.com' }
  const view: EmailView = {
    process: { id: 'p', templateName: 'T' }, step: { name: 'S' }, assignee: person, controller: person, responsible: person, tenant: { name: 'Muster' },
    property: { id: 'x', fields: { big: 'x'.repeat(300_000), list: [1, 2] } }, address: null
  }
  const big = '{{property.fields.big}}'
  t.equal(renderBody(`{{#property.fields.big}}${big.repeat(3)}{{#tenant.name}}${big.repeat(3)}{{/tenant.name}}{{/property.fields.big}}`, view), undefined)
  t.equal(renderBody(`{{#property.fields.big}}${big.repeat(3)}{{/property.fields.big}}`, view)?.length, 900_000)
  t.equal(renderBody('{{#tenant.name}}Hi {{tenant.name}}{{/tenant.name}}{{^address.fields.x}}, no address{{/address.fields.x}} {{property.fields.list}}', view),
    'Hi Muster, no address [1,2]')
  t.equal(renderSubject(`{{tenant.name}}\n${big.repeat(50)}`, view), `Muster ${'x'.repeat(493)}`)
})

t.test('sections nested as deep as a body holds render in time linear in the template', async (t) => {
  const person = { name: 'Anna', email: 'anna@example.com' }
  const view: EmailView = {
    process: { id: 'p', templateName: 'T' }, step: { name: 'S' }, assignee: person, controller: person, responsible: person, tenant: { name: 'Muster' },
    property: null, address: null
  }
  // 700 sections one inside the other fill the 20,000 characters of a body. Mustache looked each name up
  // through every section around it, and such a mail took 200 to 300 ms of the event loop; a batch of
  // 100 such steps held every tenant's automatic steps for half a minute. Twice as deep here, so that
  // the time in the square of the depth stands out from a busy machine's.
  const depth = 1400
  const inner = '{{step.name}}'.repeat(30)
  const template = '{{#step.name}}'.repeat(depth) + inner + '{{/step.name}}'.repeat(depth)
  // The fastest of three: 10 to 50 ms, where it took 0.5 to 1 s.
  const times = []
  for (let i = 0; i < 3; i++) {
    const started = performance.now()
    t.equal(renderBody(template, view), 'S'.repeat(30))
    times.push(performance.now() - started)
  }
  t.ok(Math.min(...times) < 200, `rendered in ${times.map(Math.round).join(', ')} ms`)
  t.equal(renderBody('{{#step.name}}[{{.}}{{#tenant.name}}<{{.}} {{step.name}}>{{/tenant.name}}{{.}}]{{/step.name}}', view), '[S<Muster S>S]',
    '{{.}} is still the value of the section around it')
})

t.test('{{#name}} hides its text for a value Mustache holds false (false, 0, empty, null, an empty list, missing); {{^name}} shows it just then', async (t) => {
  const person = { name: 'Anna', email: 'anna@example.com' }
  const fields = { no: false, zero: 0, empty: '', nothing: null, none: [], yes: true, one: 1, word: 'false', list: [1], object: {} }
  const view: EmailView = {
    process: { id: 'p', templateName: 'T' }, step: { name: 'S' }, assignee: person, controller: person, responsible: person, tenant: { name: 'Muster' },
    property: { id: 'x', fields }, address: null
  }
  const shown = (name: string) => renderBody(`{{#property.fields.${name}}}shown{{/property.fields.${name}}}{{^property.fields.${name}}}hidden{{/property.fields.${name}}}`, view)
  const written = (name: string) => renderBody(`{{property.fields.${name}}}|{{&property.fields.${name}}}|{{{property.fields.${name}}}}`, view)
  for (const name of ['no', 'zero', 'empty', 'nothing', 'none', 'missing']) t.equal(shown(name), 'hidden', name)
  for (const name of ['yes', 'one', 'word', 'list', 'object']) t.equal(shown(name), 'shown', name)
  const expected = { no: 'false', zero: '0', empty: '', nothing: '', none: '[]', missing: '', yes: 'true', one: '1', word: 'false', list: '[1]', object: '{}' }
  for (const [name, text] of Object.entries(expected)) t.equal(written(name), `${text}|${text}|${text}`, `${name} is written as before`)
  t.equal(renderBody('{{#property.fields.one}}[{{.}}]{{/property.fields.one}}', view), '[1]', 'a section entering a number shows it')

  const address = await owner({ hasGarden: false, rooms: 0 })
  const garden = '{{#address.fields.hasGarden}}Garden!{{/address.fields.hasGarden}}{{^address.fields.hasGarden}}No garden.{{/address.fields.hasGarden}}'
  const templateId = await rt.template([{
    kind: 'email', name: 'Garden', refersTo: { address: true },
    email: { mode: 'automatic', to: 'addressEmail', subject: 'Garden', body: `${garden} Rooms:{{#address.fields.rooms}} {{.}}{{/address.fields.rooms}}{{^address.fields.rooms}} none{{/address.fields.rooms}}` }
  }])
  await rt.start(templateId, { addressId: address.id })
  await rt.scheduler.runOnce()
  t.equal(mailsTo(address.email)[0]?.text.trim(), 'No garden. Rooms: none', 'a record\'s false and 0 hide a section in the mail sent')
})

t.test('{{.}} in an inverted section, which names the whole view, is refused: at save, in an advance\'s edit and in a writeValues text', async (t) => {
  // {{^name}} shows its text when name is empty, without entering it: {{.}} there is the view itself,
  // not a value. Rendering it threw, so an advance answered 500 and an automatic step failed with
  // "an internal error".
  const inverted = '{{^property.fields.missing}}{{.}}{{/property.fields.missing}}'
  const created = await rt.api.post('/v1/process-templates', { name: 'Inverted', controllerUserId: rt.controller.id })
  const steps = `/v1/process-templates/${created.data.id}/steps`
  const saved = await rt.api.post(steps, { kind: 'email', name: 'Inverted', refersTo: { property: true }, email: { mode: 'manual', to: 'assignee', subject: 'Hi', body: inverted } })
  t.equal(saved.statusCode, 422, saved.body)
  t.match(saved.data.errors, [{ pointer: '/body/email/body', detail: /\{\{\.\}\} is not a placeholder/ }])
  const write = await rt.api.post(steps, {
    kind: 'writeValues', name: 'Inverted', refersTo: { property: true },
    writeValues: { values: [{ record: 'property', field: 'note', value: inverted }] }
  })
  t.equal(write.statusCode, 422, write.body)
  t.match(write.data.errors, [{ pointer: '/body/writeValues/values/0/value' }])

  const templateId = await rt.template([{ kind: 'email', name: 'Send by hand', refersTo: { property: true }, email: { mode: 'manual', to: 'assignee', subject: 'Hi', body: 'Hello' } }])
  const started = await rt.start(templateId)
  const edited = await rt.api.post(`/v1/process-instances/${started.id}/advance`, { outcome: 'done', email: { body: inverted } })
  t.equal(edited.statusCode, 422, edited.body)
  t.match(edited.data.errors, [{ pointer: '/body/email/body' }])
  t.same(states(await rt.instance(started.id)), ['due'], 'nothing sent')

  // Within a section that enters a value, {{.}} is that value, inverted sections inside it included.
  const fine = await rt.api.post(steps, {
    kind: 'email', name: 'Nested', refersTo: { property: true },
    email: { mode: 'manual', to: 'assignee', subject: 'Hi', body: '{{#tenant.name}}{{^property.fields.missing}}{{.}}{{/property.fields.missing}}{{/tenant.name}}' }
  })
  t.equal(fine.statusCode, 201, fine.body)
})

t.test('a step saved before {{.}} in an inverted section was refused renders it empty, and sends its mail', async (t) => {
  const inverted = 'Hello{{^property.fields.missing}}[{{.}}{{&.}}{{{.}}}]{{/property.fields.missing}}'
  const templateId = await rt.template([
    { kind: 'email', name: 'Legacy by hand', refersTo: { property: true }, email: { mode: 'manual', to: 'assignee', subject: 'Legacy by hand', body: 'Hello' } },
    { kind: 'email', name: 'Legacy automatic', refersTo: { property: true }, email: { mode: 'automatic', to: 'assignee', subject: 'Legacy automatic', body: 'Hello' } }
  ])
  const started = await rt.start(templateId)
  // As the steps were stored before the check: an instance step's settings are copied as they are.
  for (const step of started.steps as { id: string; email: Record<string, unknown> }[]) {
    await rt.db.updateTable('instance_steps').set({ settings: JSON.stringify({ ...step.email, body: inverted }) }).where('id', '=', step.id).execute()
  }
  const sent = await rt.api.post(`/v1/process-instances/${started.id}/advance`, { outcome: 'done' })
  t.equal(sent.statusCode, 200, sent.body)
  await rt.scheduler.runOnce()
  await rt.scheduler.runOnce()
  t.same(states(await rt.instance(started.id)), ['done', 'done'], 'the automatic one is sent too, not failed by an internal error')
  for (const subject of ['Legacy by hand', 'Legacy automatic']) t.equal(mailsAbout(subject)[0]?.text.trim(), 'Hello[]', subject)
})

t.test('saving an email step: 422 with pointers for what the schema cannot tell, 400 for a bad shape', async (t) => {
  const created = await rt.api.post('/v1/process-templates', { name: 'Mail checks', controllerUserId: rt.controller.id })
  const steps = `/v1/process-templates/${created.data.id}/steps`
  const mail = { mode: 'automatic', to: 'controller', subject: 'Hi', body: 'Hello' }
  const cases: [string, Record<string, unknown>, string, RegExp][] = [
    ['addressEmail without the address', { email: { ...mail, to: 'addressEmail' } }, '/body/email/to', /refersTo\.address/],
    ['an unknown placeholder', { email: { ...mail, body: 'Hi {{owner.name}}' } }, '/body/email/body', /not a placeholder/],
    ['an unclosed tag', { email: { ...mail, body: 'Hi {{#tenant.name}} there' } }, '/body/email/body', /not a valid template/],
    ['a property field without the property', { email: { ...mail, subject: '{{property.fields.price}}' } }, '/body/email/subject', /refersTo\.property/],
    ['a partial', { email: { ...mail, body: '{{> header}}' } }, '/body/email/body', /partials/],
    ['no mail at all', {}, '/body/email', /needs its mail/]
  ]
  for (const [what, extra, pointer, detail] of cases) {
    const res = await rt.api.post(steps, { kind: 'email', name: what, ...extra })
    t.equal(res.statusCode, 422, `${what}: ${res.body}`)
    t.match(res.data.errors, [{ pointer, detail }], what)
  }
  const task = await rt.api.post(steps, { kind: 'task', name: 'A task with a mail', email: mail })
  t.equal(task.statusCode, 422)
  t.match(task.data.errors, [{ pointer: '/body/email', detail: /leave email null/ }])

  const shapes: [string, unknown][] = [
    ['an unknown mode', { ...mail, mode: 'sometimes' }],
    ['a malformed fixed address', { ...mail, to: { address: 'not an address' } }],
    ['an unknown recipient', { ...mail, to: 'everyone' }],
    ['a subject on two lines', { ...mail, subject: 'Hi\nthere' }],
    ['an unknown field', { ...mail, cc: 'x@example.com' }],
    ['no body', { mode: 'manual', to: 'controller', subject: 'Hi' }]
  ]
  for (const [what, email] of shapes) {
    const res = await rt.api.post(steps, { kind: 'email', name: what, email })
    t.equal(res.statusCode, 400, `${what}: ${res.body}`)
  }

  const good = await rt.api.post(steps, {
    kind: 'email', name: 'Fine', refersTo: { address: true },
    email: { mode: 'manual', to: 'addressEmail', subject: 'Hi {{address.fields.firstName}}', body: '{{#address.fields.nickname}}Hey {{.}}{{/address.fields.nickname}}{{! a comment }}' }
  })
  t.equal(good.statusCode, 201, good.body)
  t.match(good.data.email, { mode: 'manual', to: 'addressEmail' })
  const copy = await rt.api.post(`/v1/process-templates/${created.data.id}/copy`, {})
  t.equal(copy.statusCode, 201, copy.body)
  t.same(copy.data.steps[0].email, good.data.email, 'a copy of the template keeps the mail')
  const toTask = await rt.api.patch(`${steps}/${good.data.id}`, { kind: 'task', email: null }, { 'if-match': `"${good.data.version}"` })
  t.equal(toTask.statusCode, 200, toTask.body)
  t.equal(toTask.data.email, null, 'a step that becomes a task drops its mail')
})

t.test('a huge value that is no address is shown by its start in the reason, not whole', async (t) => {
  const templateId = await rt.template([tellOwner('Mail the long owner'), { kind: 'task', name: 'After the long owner' }])
  const huge = `not an address ${'x'.repeat(100_000)}`
  const started = await rt.start(templateId, { addressId: (await owner({ email: huge })).id })
  await rt.scheduler.runOnce()
  const activities = await rt.api.get(`/v1/process-instances/${started.id}/activities`)
  const failed = activities.data.items.find((a: { kind: string }) => a.kind === 'automaticStepFailed')
  t.match(failed?.message, /"not an address x+…" \(100,015 characters\) is not an e-mail address/)
  t.ok(failed.message.length < 1000, `the reason stays short (${failed.message.length} characters)`)
  await rt.scheduler.runOnce()
  const [alert] = mailsAbout('Automatic step failed: "Mail the long owner"')
  t.ok(alert && alert.text.length < 5000, `and so does the controller's mail (${alert?.text.length} characters)`)
})

// A C1 control character or a zero-width space passed the check: the step's mail went to the SMTP
// server, which refused or misrouted it, attempt after attempt, instead of the step failing at once.
// A number or a list in the field was reported as an empty field, which it is not.
t.test('a field "email" holding another JSON value than text is no e-mail address, and the reason shows it', async (t) => {
  const templateId = await rt.template([tellOwner('Mail the numbered owner'), { kind: 'task', name: 'After the numbered owner' }])
  for (const [email, shown] of [[42, '42'], [false, 'false'], [['olga@example.com'], '["olga@example.com"]'], [{ at: 'example.com' }, '{"at":"example.com"}']] as const) {
    const started = await rt.start(templateId, { addressId: (await owner({ email })).id })
    await rt.scheduler.runOnce()
    const activities = await rt.api.get(`/v1/process-instances/${started.id}/activities`)
    const failed = activities.data.items.find((a: { kind: string }) => a.kind === 'automaticStepFailed')
    t.equal(failed?.message, `Automatic step "Mail the numbered owner" failed: its e-mail cannot be sent: the linked address's field "email" holds ${shown}, which is not an e-mail address.`)
  }
})

t.test('an address holding an invisible character (C1 control, DEL, zero-width space), or too long before its @, is no e-mail address', async (t) => {
  const templateId = await rt.template([tellOwner('Mail the invisible owner'), { kind: 'task', name: 'After the invisible owner' }])
  // And one whose part before the @ is longer than the 64 characters SMTP carries.
  for (const email of ['olga\u0085@example.com', 'ol\u007fga@example.com', 'ol\u200bga@example.com', 'olga@exam\u2060ple.com', `${'o'.repeat(65)}@example.com`, `olga@${'e'.repeat(64)}.com`]) {
    const started = await rt.start(templateId, { addressId: (await owner({ email })).id })
    await rt.scheduler.runOnce()
    const activities = await rt.api.get(`/v1/process-instances/${started.id}/activities`)
    const failed = activities.data.items.find((a: { kind: string }) => a.kind === 'automaticStepFailed')
    t.match(failed?.message, /is not an e-mail address/, `${JSON.stringify(email)}: the step fails into a manual one, with why`)
  }
})
