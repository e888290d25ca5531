import { once } from 'node:events'
import { connect } from 'node:net'
import t, { type Test } from 'tap'
import { sql } from '../../src/db/kysely.js'
import { createMailer, type Mailer } from '../../src/adapters/mailer.js'
import { STEP_MAIL_MAX_ATTEMPTS } from '../../src/scheduler/email-steps.js'
import { mailServerState, sendQueuedMail } from '../../src/scheduler/send-mail.js'
import { HOUR } from '../helpers/clock.js'
import { setupRuntime } from '../helpers/runtime.js'
import { TestSmtpServer } from '../helpers/smtp.js'

// SMTP servers that misbehave in ways a real one does, against the real outbox and scheduler.
const rt = await setupRuntime(t)

const states = (view: { steps: { state: string }[] }) => view.steps.map((s) => s.state)

/** A scheduler whose mail goes to `smtp`, and the template of one automatic email step to the assignee. */
async function mailingTo(smtp: TestSmtpServer, name: string) {
  const mailer = createMailer({ smtpUrl: smtp.url, mailDir: '', timeoutMs: 2000 })
  t.teardown(() => mailer.close())
  const templateId = await rt.template([{ kind: 'email', name, email: { mode: 'automatic', to: 'assignee', subject: `${name} {{process.id}}`, body: 'Hi' } }])
  return { scheduler: rt.newScheduler({}, undefined, { mailer }), templateId }
}

t.test('a server that takes one connection at a time: every mail goes out at once, and the connections it turned away cost no attempt', async (t) => {
  // Baton opens several connections; a server limiting them answers the extra ones 421 at the
  // greeting. Those mails were never offered: counted as failures, they waited out a backoff and
  // spent their step's attempts (a step failed into a manual one, its mail never refused).
  const smtp = await TestSmtpServer.start({ maxClients: 1 })
  t.teardown(() => smtp.close())
  const { scheduler, templateId } = await mailingTo(smtp, 'One connection at a time')
  const ids: string[] = []
  for (let i = 0; i < 40; i++) ids.push((await rt.start(templateId)).id)

  // The clock stands still: no backoff ends, so a mail turned away and put off would not go out.
  await scheduler.runOnce()
  const views = await Promise.all(ids.map((id) => rt.instance(id)))
  t.same(views.map(states), ids.map(() => ['done']), 'every step is done')
  t.equal(smtp.mails.length, 40, 'each mail arrived')
  t.equal(new Set(smtp.mails.map((m) => m.messageId)).size, 40, 'once')
  const { rows } = await sql<{ attempt_count: number; n: number }>`
    select attempt_count, count(*)::int as n from outbox_mails o join instance_steps s on s.id = o.step_id
    where s.name = 'One connection at a time' group by attempt_count`.execute(rt.db)
  t.same(rows, [{ attempt_count: 1, n: 40 }], 'each mail spent one attempt: the one that sent it')
})

/** A server of one connection, which another client holds: it turns every connection Baton opens away at its greeting. */
async function fullServer(t: Test): Promise<TestSmtpServer> {
  const smtp = await TestSmtpServer.start({ maxClients: 1 })
  t.teardown(() => smtp.close())
  const other = connect({ host: '127.0.0.1', port: Number(new URL(smtp.url).port) })
  await once(other, 'data')
  t.teardown(() => { other.destroy() })
  return smtp
}

t.test('a server that turns every connection away at its greeting is down: its mails wait their backoff, an attempt counted, not tried again at once', async (t) => {
  const smtp = await fullServer(t)
  const { scheduler, templateId } = await mailingTo(smtp, 'Every connection turned away')
  const ids: string[] = []
  for (let i = 0; i < 3; i++) ids.push((await rt.start(templateId)).id)

  await scheduler.runOnce()
  const { rows } = await sql<{ attempt_count: number; next_attempt_at: Date; last_error: string | null; failed_at: Date | null }>`
    select attempt_count, next_attempt_at, last_error, failed_at from outbox_mails o join instance_steps s on s.id = o.step_id
    where s.name = 'Every connection turned away'`.execute(rt.db)
  t.equal(rows.length, 3)
  for (const row of rows) {
    t.match(row, { attempt_count: 1, failed_at: null, last_error: /421/ }, 'tried once, kept queued')
    t.ok(row.next_attempt_at.getTime() > rt.clock.now().getTime(), 'due again after a backoff')
  }
  t.same((await Promise.all(ids.map((id) => rt.instance(id)))).map(states), ids.map(() => ['running']), 'the steps wait for their mails')
  t.equal(smtp.mails.length, 0)
})

t.test('a step\'s mail given up is logged: the server\'s refusal, the mail and the step, as any mail that failed is', async (t) => {
  const warnings: { obj: Record<string, unknown>; msg: string }[] = []
  const log = { info() {}, warn: (obj: object, msg: string) => warnings.push({ obj: obj as Record<string, unknown>, msg }), error() {} }
  rt.smtp.refusedRecipients.add('nobody@example.com')
  t.teardown(() => rt.smtp.refusedRecipients.delete('nobody@example.com'))
  const templateId = await rt.template([
    { kind: 'email', name: 'Mail to nobody', email: { mode: 'automatic', to: { address: 'nobody@example.com' }, subject: 'Nobody', body: 'Hi' } }
  ])
  const started = await rt.start(templateId)
  await rt.newScheduler({}, log).runOnce()
  t.same(states(await rt.instance(started.id)), ['failed'], 'the step failed into a manual one')
  const { rows: [mail] } = await sql<{ id: string }>`select id from outbox_mails where step_id = ${started.steps[0].id}`.execute(rt.db)
  const given = warnings.filter((w) => w.obj.mailId === mail!.id)
  t.equal(given.length, 1, 'one line for the mail given up')
  t.match(given[0], { obj: { stepId: started.steps[0].id, err: { responseCode: 550 } }, msg: /given up/ })
})

t.test('a step\'s mail given up after its attempts with the server down: the reason says so, not that the server refused it', async (t) => {
  const gone = await TestSmtpServer.start()
  await gone.close()
  const { scheduler, templateId } = await mailingTo(gone, 'Mail through a server that is down')
  const started = await rt.start(templateId)
  for (let attempt = 1; attempt <= STEP_MAIL_MAX_ATTEMPTS; attempt++) {
    await scheduler.runOnce()
    if (attempt < STEP_MAIL_MAX_ATTEMPTS) t.same(states(await rt.instance(started.id)), ['running'], `running after attempt ${attempt}`)
    rt.clock.advance(HOUR)
  }
  t.same(states(await rt.instance(started.id)), ['failed'], 'failed into a manual one after its attempts')
  const activities = await rt.api.get(`/v1/process-instances/${started.id}/activities`)
  const failed = activities.data.items.find((a: { kind: string }) => a.kind === 'automaticStepFailed')?.message
  t.match(failed, /could not be sent in 8 attempts \(the last: .*ECONNREFUSED/, 'the attempts, and the last error')
  t.notMatch(failed, /refused/, 'no server refused it: none answered')
})

/** Marks the mails queued before as sent, and queues `count` deadline mails with this subject, due now. */
async function queueOnly(count: number, subject: string): Promise<void> {
  await sql`update outbox_mails set sent_at = now() where sent_at is null and failed_at is null`.execute(rt.db)
  for (let i = 1; i <= count; i++) {
    await sql`insert into outbox_mails (tenant_id, id, dedupe_key, kind, to_address, subject, body, next_attempt_at)
      values (${rt.tenant.id}, gen_random_uuid(), ${`${subject}-${i}`}, 'deadlineMissed', 'clara@example.com', ${subject}, 'body', ${rt.clock.now()})`.execute(rt.db)
  }
}

t.test('mails turned away at the greeting whose marks give up: the server took none, so the untried mails of the pass wait with them, and for the lease too', async (t) => {
  const smtp = await fullServer(t)
  const mailer = createMailer({ smtpUrl: smtp.url, mailDir: '', timeoutMs: 2000 })
  t.teardown(() => mailer.close())
  await queueOnly(10, 'Turned away')
  // The mark of a mail turned away breaks a rule (as a database gone for the lease would make it give up).
  await sql`alter table outbox_mails add constraint turned_away_not_recorded check (last_error not like '%421%') not valid`.execute(rt.db)
  t.teardown(async () => { await sql`alter table outbox_mails drop constraint turned_away_not_recorded`.execute(rt.db) })

  await t.rejects(sendQueuedMail(rt.db, mailer, { now: rt.clock.now(), from: 'Baton <baton@example.com>', limit: 10 }), /turned_away_not_recorded/)
  const { rows } = await sql<{ state: string; n: number }>`
    select case when lease_expires_at is null and attempt_count = 0 then 'back in the queue' else 'leased' end as state, count(*)::int as n
    from outbox_mails where subject = 'Turned away' group by 1 order by 1`.execute(rt.db)
  // The server turned every lane away, down for all of the pass's mails: the two untried are put off as well, and their marks give up too.
  t.same(rows, [{ state: 'leased', n: 10 }], 'one turned away in each lane and the two untried wait for their lease')
})

// A pass's lease is timed on a timer that only goes forward. On this machine's clock, a step forward
// ended every lane after its first mail (the rest went back for a later pass), and a step back let
// lanes start sends after the lease had ended, when another worker may have taken the mail back.
t.test('a step of this machine\'s clock during a pass changes nothing of what the pass sends', async (t) => {
  const smtp = await TestSmtpServer.start()
  t.teardown(() => smtp.close())
  const mailer = createMailer({ smtpUrl: smtp.url, mailDir: '', timeoutMs: 2000 })
  t.teardown(() => mailer.close())
  await queueOnly(20, 'Clock step')
  const wallNow = Date.now
  t.teardown(() => { Date.now = wallNow })
  smtp.beforeAnswer = async () => {
    smtp.beforeAnswer = undefined
    Date.now = () => wallNow() + 10 * 60_000
  }
  const pass = await sendQueuedMail(rt.db, mailer, { now: rt.clock.now(), from: 'Baton <baton@example.com>', limit: 20 })
  t.equal(pass.sent, 20, 'every mail of the pass went out in it')
  t.equal(smtp.mails.filter((mail) => mail.subject === 'Clock step').length, 20)
})

// A failure of the server's own (here a refused login) holds a worker's mail; the rest of its rules, each
// of which no other test would miss.
t.test('the mail hold: 10 s after a failure of the server\'s own, doubling to 5 minutes, then one mail alone; over when the clock steps back past it; a refusal of one mail, or a greeting that turns Baton away, holds nothing', async (t) => {
  const login = Object.assign(new Error('Invalid login: 535 Authentication failed'), { code: 'EAUTH', responseCode: 535, command: 'AUTH PLAIN' })
  let error: Error = login
  let sends = 0
  const mailer: Mailer = {
    async send() {
      sends += 1
      throw error
    },
    close() {}
  }
  const server = mailServerState()
  const pass = () => sendQueuedMail(rt.db, mailer, { now: rt.clock.now(), from: 'Baton <baton@example.com>', limit: 10, server })
  const heldFor = () => server.heldUntil - rt.clock.now().getTime()
  let batches = 0
  const queue = (count: number) => queueOnly(count, `Held ${++batches}`)

  await queue(3)
  await pass()
  t.equal(sends, 1, 'a worker\'s first pass sends one mail alone')
  t.equal(heldFor(), 10_000, 'then holds its mail for 10 s')
  rt.clock.advance(5000)
  await queue(3)
  await pass()
  t.equal(sends, 1, 'nothing is sent while held, though mails are due')
  rt.clock.advance(5000)
  await pass()
  t.equal(sends, 2, 'one mail alone once the hold is over')
  const holds = [heldFor()]
  for (let i = 0; i < 6; i++) {
    rt.clock.set(new Date(server.heldUntil))
    await queue(1)
    await pass()
    holds.push(heldFor())
  }
  t.same(holds, [20_000, 40_000, 80_000, 160_000, 300_000, 300_000, 300_000], 'doubling to 5 minutes')
  t.equal(sends, 8, 'one login a hold')

  // The clock steps back an hour: a hold that would end more than its longest from now is over.
  rt.clock.set(new Date(rt.clock.now().getTime() - HOUR))
  await queue(1)
  await pass()
  t.equal(sends, 9, 'a clock stepped back past the hold does not keep mail held for an hour')

  // Refusals of one mail: its recipient, or a 421 at the greeting (the server's connections full).
  for (const [what, refusal] of [
    ['a 550 to RCPT TO', Object.assign(new Error('550 No such mailbox'), { responseCode: 550, command: 'RCPT TO' })],
    ['a 421 at the greeting', Object.assign(new Error('421 Too many connections'), { code: 'EPROTOCOL', responseCode: 421, command: 'CONN' })]
  ] as const) {
    rt.clock.set(new Date(server.heldUntil))
    error = refusal
    await queue(1)
    const before = { sends, heldUntil: server.heldUntil }
    await pass()
    t.equal(sends, before.sends + 1, `${what}: tried`)
    t.equal(server.heldUntil, before.heldUntil, `${what}: no hold begins`)
    await queue(1)
    await pass()
    t.equal(sends, before.sends + 2, `${what}: the next pass sends at once`)
  }
  t.equal(server.failures, 0, 'a server that answered a mail is counted sound again')
})
