import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { createMailer, type Mailer } from '../../src/adapters/mailer.js'
import { claimMails, releaseMails } from '../../src/scheduler/mail-repository.js'
import { sendQueuedMail } from '../../src/scheduler/send-mail.js'
import { sweepDeadlines } from '../../src/scheduler/sweep-deadlines.js'
import { HOUR } from '../helpers/clock.js'
import { waitForLockWait } from '../helpers/database.js'
import { heldDeletion } from '../helpers/deletion.js'
import { setupRuntime } from '../helpers/runtime.js'

// One runtime for the file; each test names its own steps and counts only the mails about them.
const rt = await setupRuntime(t)

const mailsAbout = (text: string) => rt.smtp.mails.filter((m) => m.subject.includes(text))

t.test('ten overdue steps, two schedulers and a sweeper at once: exactly one mail per step', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Call the owner back', deadlineDays: 1, refersTo: { property: true } }])
  const instanceIds: string[] = []
  for (let i = 0; i < 10; i++) instanceIds.push((await rt.start(templateId)).id)

  rt.clock.advance(23 * HOUR)
  t.equal((await rt.scheduler.runOnce()).deadlines, 0, 'nothing before the deadline')

  rt.clock.advance(2 * HOUR)
  const [a, b] = [rt.newScheduler(), rt.newScheduler()]
  const [runA, runB, swept] = await Promise.all([a.runOnce(), b.runOnce(), sweepDeadlines(rt.db, rt.clock.now(), 100)])
  t.equal(runA.deadlines + runB.deadlines + swept, 10, 'each overdue step is reported by exactly one of them')
  await Promise.all([a.runOnce(), b.runOnce(), rt.scheduler.runOnce()])

  const mails = mailsAbout('"Call the owner back"')
  t.equal(mails.length, 10, 'ten mails arrive')
  for (const mail of mails) {
    t.same(mail.to, [rt.controller.email], 'to the controller')
    t.equal(mail.subject, 'Deadline missed: "Call the owner back" in "Re-value a property" (1 hour late)')
    t.match(mail.text, /Late by:\s+1 hour/)
    t.match(mail.text, new RegExp(rt.propertyId))
  }
  const mentioned = mails.map((m) => /\(instance ([0-9a-f-]{36})\)/.exec(m.text)?.[1]).sort()
  t.same(mentioned, [...instanceIds].sort(), 'one mail per step, each naming its own process instance')
  t.equal(new Set(mails.map((m) => m.messageId)).size, 10)

  const { rows } = await sql<{ n: number }>`select count(*)::int as n from outbox_mails where kind = 'deadlineMissed' and sent_at is not null`.execute(rt.db)
  t.equal(rows[0]!.n, 10, 'ten outbox rows, all sent')

  rt.clock.advance(24 * HOUR)
  const later = await Promise.all([a.runOnce(), b.runOnce()])
  t.equal(later[0].deadlines + later[1].deadlines, 0, 'a step is reported once, however long it stays open')
  t.equal(mailsAbout('"Call the owner back"').length, 10)
})

t.test('SMTP refusing, then accepting: the mail stays queued and then arrives exactly once', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Order the floor plan' }, { kind: 'task', name: 'Book the photographer' }])
  const instance = await rt.start(templateId)

  rt.smtp.refusing = true
  const skipped = await rt.api.post(`/v1/process-instances/${instance.id}/advance`, { outcome: 'skipped', note: 'Plan is on file' })
  t.equal(skipped.statusCode, 200, skipped.body)
  const queuedAt = rt.clock.now()

  const first = await rt.scheduler.runOnce()
  t.equal(first.mails, 0, 'not sent while the server refuses')
  t.equal(mailsAbout('"Order the floor plan"').length, 0)
  const outbox = async () => (await sql<{ sent_at: Date | null; last_error: string | null; attempt_count: number; next_attempt_at: Date }>`
    select sent_at, last_error, attempt_count, next_attempt_at from outbox_mails where kind = 'stepSkipped' and subject like '%Order the floor plan%'
  `.execute(rt.db)).rows
  let rows = await outbox()
  t.equal(rows.length, 1, 'one mail queued')
  t.equal(rows[0]!.sent_at, null, 'still unsent')
  t.match(rows[0]!.last_error, /451|unavailable/i, 'the refusal is kept')
  t.equal(rows[0]!.attempt_count, 1)
  t.ok(rows[0]!.next_attempt_at.getTime() > queuedAt.getTime(), 'retried later, with backoff')

  rt.smtp.refusing = false
  t.equal((await rt.scheduler.runOnce()).mails, 0, 'not before its backoff has passed')
  t.equal(mailsAbout('"Order the floor plan"').length, 0)

  rt.clock.set(new Date(rows[0]!.next_attempt_at.getTime() + 1000))
  const other = rt.newScheduler()
  const runs = await Promise.all([rt.scheduler.runOnce(), other.runOnce()])
  runs.push(await rt.scheduler.runOnce(), await other.runOnce())
  t.equal(runs.reduce((n, r) => n + r.mails, 0), 1, 'sent by one scheduler, once')

  const mails = mailsAbout('"Order the floor plan"')
  t.equal(mails.length, 1, 'the mail arrives exactly once')
  t.equal(mails[0]!.subject, 'Step skipped: "Order the floor plan" in "Re-value a property"')
  t.same(mails[0]!.to, [rt.controller.email])
  t.match(mails[0]!.text, /Plan is on file/)
  rows = await outbox()
  t.ok(rows[0]!.sent_at, 'marked sent')
  t.equal(rows[0]!.last_error, null)
  t.equal(rows[0]!.attempt_count, 2)
})

t.test('a step that ended before its deadline sends no mail', async (t) => {
  const templateId = await rt.template([
    { kind: 'task', name: 'Check the land register', deadlineDays: 1 },
    { kind: 'task', name: 'File the report' }
  ])
  const instance = await rt.start(templateId)
  rt.clock.advance(2 * HOUR)
  const done = await rt.api.post(`/v1/process-instances/${instance.id}/advance`, { outcome: 'done', stepId: instance.steps[0].id })
  t.equal(done.statusCode, 200, done.body)
  t.equal(done.data.steps[0].deadlineAt, new Date(rt.clock.now().getTime() + 22 * HOUR).toISOString(), 'the deadline was still ahead')

  rt.clock.advance(25 * HOUR)
  const runs = await Promise.all([rt.scheduler.runOnce(), rt.newScheduler().runOnce()])
  t.equal(runs[0].deadlines + runs[1].deadlines, 0, 'nothing overdue')
  t.equal(await sweepDeadlines(rt.db, rt.clock.now(), 100), 0)
  t.equal(mailsAbout('"Check the land register"').length, 0)
  const { rows } = await sql<{ n: number }>`
    select count(*)::int as n from outbox_mails where kind = 'deadlineMissed' and subject like '%Check the land register%'
  `.execute(rt.db)
  t.equal(rows[0]!.n, 0, 'and none queued')
})

t.test('a step that ends past its deadline before a sweep saw it (no worker ran) still sends its one mail', async (t) => {
  const templateId = await rt.template([
    { kind: 'task', name: 'Measure the rooms', deadlineDays: 1 },
    { kind: 'task', name: 'Draw the plan', deadlineDays: 1 },
    { kind: 'task', name: 'Send the plan' }
  ])
  const instance = await rt.start(templateId)
  rt.clock.advance(25 * HOUR)
  const done = await rt.api.post(`/v1/process-instances/${instance.id}/advance`, { outcome: 'done' })
  t.equal(done.statusCode, 200, done.body)
  rt.clock.advance(26 * HOUR)
  const skipped = await rt.api.post(`/v1/process-instances/${instance.id}/advance`, { outcome: 'skipped', note: 'Plan on file' })
  t.equal(skipped.statusCode, 200, skipped.body)

  const runs = await Promise.all([rt.scheduler.runOnce(), rt.newScheduler().runOnce()])
  t.equal(runs[0].deadlines + runs[1].deadlines, 0, 'no sweep reports an ended step')
  await rt.scheduler.runOnce()
  const measure = mailsAbout('Deadline missed: "Measure the rooms"')
  t.equal(measure.length, 1, 'one mail for the step that was done late')
  t.match(measure[0]?.subject, /\(1 hour late\)/, 'as late as it was when it ended')
  t.match(measure[0]?.text, /did not end by its deadline; it ended 1 hour after it\./, 'saying it has ended')
  t.equal(mailsAbout('Deadline missed: "Draw the plan"').length, 1, 'one for the step skipped late')
  t.equal(mailsAbout('"Draw the plan"').length, 2, 'beside the mail about its skip')
  t.equal(mailsAbout('"Send the plan"').length, 0)

  // A process cancelled while its step is past its deadline: the step ended late as well.
  const cancelledLate = await rt.start(await rt.template([{ kind: 'task', name: 'Book the surveyor', deadlineDays: 1 }]))
  rt.clock.advance(26 * HOUR)
  const cancelled = await rt.api.post(`/v1/process-instances/${cancelledLate.id}/cancel`, { note: 'Sold' })
  t.equal(cancelled.statusCode, 200, cancelled.body)
  await Promise.all([rt.scheduler.runOnce(), rt.newScheduler().runOnce()])
  await rt.scheduler.runOnce()
  const surveyor = mailsAbout('Deadline missed: "Book the surveyor"')
  t.equal(surveyor.length, 1, 'one mail for the step its process cancelled late, as a sweep a moment earlier would have sent')
  t.match(surveyor[0]?.text, /it ended 2 hours after it\./)

  // A webhook step called late, by a worker that sweeps and calls in the same pass: still one mail.
  const called = await rt.template([{ kind: 'webhook', name: 'Order the energy certificate', deadlineDays: 1, refersTo: { property: true } }])
  await rt.start(called)
  rt.clock.advance(25 * HOUR)
  await Promise.all([rt.scheduler.runOnce(), rt.newScheduler().runOnce()])
  await rt.scheduler.runOnce()
  t.equal(mailsAbout('Deadline missed: "Order the energy certificate"').length, 1, 'one mail for the webhook step called late')
})

t.test('large mails: a claim loads at most about 4 MiB of bodies, and the rest go out in the next claims', async (t) => {
  await sql`update outbox_mails set sent_at = now() where sent_at is null`.execute(rt.db)
  // Six mails of 1.5 MB each (stored compressed: the claim counts what it would load, not what is stored).
  for (let i = 1; i <= 6; i++) {
    await sql`insert into outbox_mails (tenant_id, id, dedupe_key, kind, to_address, subject, body, next_attempt_at)
      values (${rt.tenant.id}, gen_random_uuid(), ${`large:${i}`}, 'stepSkipped', 'clara@example.com', ${`Large mail ${i}`},
        repeat('x', 1500000), ${rt.clock.now()})`.execute(rt.db)
  }
  const now = rt.clock.now()
  const first = await claimMails(rt.db, { now, leaseUntil: new Date(now.getTime() + 60_000), limit: 100 })
  t.equal(first.mails.length, 3, 'three bodies: the fourth would start past 4 MiB')
  t.ok(first.mails.every((mail) => mail.body.length === 1_500_000), 'each with its whole body')
  t.equal(first.more, true, 'more are due than the claim took')
  const second = await claimMails(rt.db, { now, leaseUntil: new Date(now.getTime() + 60_000), limit: 100 })
  t.equal(second.mails.length, 3, 'the next claim takes the other three')
  t.equal(second.more, false, 'and nothing is left')
  t.same((await claimMails(rt.db, { now, leaseUntil: new Date(now.getTime() + 60_000), limit: 100, maxBytes: 1 })).mails, [], 'all leased')
  await releaseMails(rt.db, [...first.mails, ...second.mails])

  const one = await claimMails(rt.db, { now, leaseUntil: new Date(now.getTime() + 60_000), limit: 100, maxBytes: 1 })
  t.equal(one.mails.length, 1, 'a mail larger than the budget alone is still claimed')
  await releaseMails(rt.db, one.mails)

  const run = await rt.scheduler.runOnce()
  t.equal(run.mails, 6, 'one run sends all six, claim after claim')
  const arrived = mailsAbout('Large mail')
  t.equal(arrived.length, 6, 'each arrives')
  t.equal(new Set(arrived.map((m) => m.subject)).size, 6, 'once')
})

t.test('a controller whose address the server refuses: once the tenant corrects it, the queued mail goes to the new address', async (t) => {
  const old = 'ola.typo@example.com'
  rt.smtp.refusedRecipients.add(old)
  t.teardown(() => { rt.smtp.refusedRecipients.delete(old) })
  const ola = (await rt.api.post('/v1/users', { name: 'Ola Owner', email: old })).data
  const template = (await rt.api.post('/v1/process-templates', { name: 'Hand over the keys', controllerUserId: ola.id })).data
  await rt.api.post(`/v1/process-templates/${template.id}/steps`,
    { kind: 'task', name: 'Meet the buyer', start: { mode: 'afterPrevious' }, responsibility: 'processResponsible', deadlineDays: 1 })
  t.equal((await rt.api.patch(`/v1/process-templates/${template.id}`, { active: true })).statusCode, 200)
  await rt.start(template.id)

  rt.clock.advance(25 * HOUR)
  await rt.scheduler.runOnce()
  t.equal(mailsAbout('"Meet the buyer"').length, 0, 'refused: no such mailbox')
  const outbox = async () => (await sql<{ to_address: string; sent_at: Date | null; next_attempt_at: Date }>`
    select to_address, sent_at, next_attempt_at from outbox_mails where subject like '%"Meet the buyer"%'`.execute(rt.db)).rows
  const [queued] = await outbox()
  t.match(queued, { to_address: old, sent_at: null }, 'still queued, for the address it had')

  const fixed = await rt.api.patch(`/v1/users/${ola.id}`, { email: 'ola@example.com' })
  t.equal(fixed.statusCode, 200, fixed.body)
  rt.clock.set(new Date(queued!.next_attempt_at.getTime() + 1000))
  await rt.scheduler.runOnce()
  const mails = mailsAbout('"Meet the buyer"')
  t.equal(mails.length, 1, 'the mail arrives')
  t.same(mails[0]!.to, ['ola@example.com'], 'at the address the controller has now')
  t.match(await outbox(), [{ to_address: 'ola@example.com', sent_at: Date }], 'and the outbox says where it went')
})

/** Queues `count` mails about `about`, due now, the first due first (a claim takes them in that order). */
async function queueMails(about: string, count: number): Promise<void> {
  for (let i = 1; i <= count; i++) {
    const due = new Date(rt.clock.now().getTime() - (count - i) * 1000)
    await sql`insert into outbox_mails (tenant_id, id, dedupe_key, kind, to_address, subject, body, next_attempt_at)
      values (${rt.tenant.id}, gen_random_uuid(), ${`${about}:${i}`}, 'stepSkipped', 'clara@example.com', ${`${about} ${i}`}, 'body', ${due})`.execute(rt.db)
  }
}

const outboxAbout = async (about: string) => (await sql<{ sent_at: Date | null; lease_expires_at: Date | null; attempt_count: number }>`
  select sent_at, lease_expires_at, attempt_count from outbox_mails where subject like ${`${about} %`} order by subject`.execute(rt.db)).rows

// A claim leases its mails for two minutes. A slow server's sends, one after another in each lane, ran
// on past the lease, when another worker claims the mails still being sent and sends them again.
t.test('a slow SMTP server: after its first send, a lane starts one only while it would end before the lease does', async (t) => {
  await sql`update outbox_mails set sent_at = now() where sent_at is null`.execute(rt.db)
  await queueMails('Slow server', 10)
  // Each mail is answered after 300 ms; a send may take 4 × 27.475 s, which leaves 0.1 s of the claim's
  // 110 s for sends to start in: the first one in each of the eight lanes starts, the ninth and tenth do not.
  rt.smtp.beforeAnswer = () => new Promise((resolve) => setTimeout(resolve, 300))
  t.teardown(() => { rt.smtp.beforeAnswer = undefined })
  const slow = createMailer({ smtpUrl: rt.smtp.url, mailDir: '', timeoutMs: 27_475 })
  t.teardown(() => slow.close())
  t.equal(slow.sendDeadlineMs, 109_900)

  const pass = await sendQueuedMail(rt.db, slow, { now: rt.clock.now(), from: 'Baton <baton@example.com>', limit: 10 })
  t.equal(pass.sent, 8, 'one send in each lane')
  t.equal(pass.more, true, 'the rest are due still')
  t.equal(mailsAbout('Slow server').length, 8)
  const rows = await outboxAbout('Slow server')
  const untried = rows.filter((row) => row.sent_at === null)
  t.equal(untried.length, 2, 'two not sent')
  t.same(untried.map((row) => [row.lease_expires_at, row.attempt_count]), [[null, 0], [null, 0]], 'back in the queue, their attempt not counted')

  rt.smtp.beforeAnswer = undefined
  t.equal((await rt.scheduler.runOnce()).mails, 2, 'the next pass sends them')
  const arrived = mailsAbout('Slow server')
  t.equal(arrived.length, 10)
  t.equal(new Set(arrived.map((m) => m.subject)).size, 10, 'each once')
})

// The lease runs from the claim's start (its `now`), and a claim may wait for a connection and a lock;
// the time left for sends was counted from the claim's end, so a slow claim had sends end past the lease.
t.test('a claim that waits: the time for sends is counted from its start, as the lease is, not from its end', async (t) => {
  await sql`update outbox_mails set sent_at = now() where sent_at is null`.execute(rt.db)
  await queueMails('Slow claim', 10)
  // A send may take 4 × 27.25 s, which leaves 1 s of the claim's 110 s for sends to start in; the
  // claim waits 1.5 s for a lock, so that second has passed when it returns: only each lane's first starts.
  const mailer = createMailer({ smtpUrl: rt.smtp.url, mailDir: '', timeoutMs: 27_250 })
  t.teardown(() => mailer.close())
  let locked!: () => void
  const holding = new Promise<void>((resolve) => (locked = resolve))
  const lock = rt.db.transaction().execute(async (trx) => {
    await sql`lock table outbox_mails in exclusive mode`.execute(trx)
    locked()
    await new Promise((resolve) => setTimeout(resolve, 1500))
  })
  await holding
  const pass = await sendQueuedMail(rt.db, mailer, { now: rt.clock.now(), from: 'Baton <baton@example.com>', limit: 10 })
  await lock
  t.equal(pass.sent, 8, 'one send in each lane, none after it')
  t.equal(mailsAbout('Slow claim').length, 8)
  const untried = (await outboxAbout('Slow claim')).filter((row) => row.sent_at === null)
  t.same(untried.map((row) => [row.lease_expires_at, row.attempt_count]), [[null, 0], [null, 0]], 'two back in the queue, their attempt not counted')
  t.equal((await rt.scheduler.runOnce()).mails, 2, 'the next pass sends them')
  t.equal(mailsAbout('Slow claim').length, 10)
})

// A lane whose mark of a refused mail gave up (say, the database away past the lease's margin) threw out
// of the pass before the mails the server had taken were marked sent: they went out again after the lease.
t.test('a mark that gives up in one lane: the mails the server took in the others are still marked sent, the untried ones go back', async (t) => {
  await sql`update outbox_mails set sent_at = now() where sent_at is null`.execute(rt.db)
  await queueMails('Mark fails', 10)
  // The mark of the refused mail breaks a rule that the mark of a sent one keeps.
  await sql`alter table outbox_mails add constraint refusals_not_recorded check (last_error not like '%451 try again%') not valid`.execute(rt.db)
  t.teardown(async () => { await sql`alter table outbox_mails drop constraint refusals_not_recorded`.execute(rt.db) })
  let sends = 0
  const refusing: Mailer = {
    async send(mail) {
      sends += 1
      // A refusal of this mail (its recipient), not of the server: the others are not put off with it.
      if (mail.subject === 'Mark fails 2') throw Object.assign(new Error('451 try again later'), { responseCode: 451, command: 'RCPT TO' })
      await new Promise((resolve) => setTimeout(resolve, 50))
    },
    close() {}
  }
  await t.rejects(sendQueuedMail(rt.db, refusing, { now: rt.clock.now(), from: 'Baton <baton@example.com>', limit: 10 }), /refusals_not_recorded/)
  t.equal(sends, 8, 'one in each lane; after the refusal no lane starts another')
  const rows = await outboxAbout('Mark fails')
  const state = (row: { sent_at: Date | null; lease_expires_at: Date | null; attempt_count: number }) =>
    row.sent_at !== null ? 'sent' : row.lease_expires_at === null && row.attempt_count === 0 ? 'back in the queue' : 'leased'
  // By subject: 1, 10, 2, 3, …, 9 (the claim took them as queued, 1 to 10).
  t.same(rows.map(state), ['sent', 'back in the queue', 'leased', 'sent', 'sent', 'sent', 'sent', 'sent', 'sent', 'back in the queue'],
    'the seven the server took are marked sent, the refused one waits for its lease, the two untried go back')
})

// An advance takes its time once it holds the process and writes the step's end a moment later; a
// sweep whose time had reached the deadline in that moment marked the step and queued the mail.
t.test('a step marked done a millisecond before its deadline, while a sweep at the deadline runs: no mail', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Sign at the notary', deadlineDays: 1 }, { kind: 'task', name: 'Hand over' }])
  const instance = await rt.start(templateId, { propertyId: undefined })
  const deadline = new Date(instance.steps[0].deadlineAt)
  rt.clock.set(new Date(deadline.getTime() - 1))

  // The advance's write waits (for a lock on the activity log) after it has taken its time.
  let release!: () => void
  let held!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  const holding = new Promise<void>((resolve) => { held = resolve })
  const hold = rt.db.transaction().execute(async (trx) => {
    await sql`lock table activities in exclusive mode`.execute(trx)
    held()
    await released
  })
  await holding
  const advancing = rt.api.post(`/v1/process-instances/${instance.id}/advance`, { outcome: 'done', stepId: instance.steps[0].id })
  await t.resolves(waitForLockWait(rt.db), 'the advance waits in its write')
  t.equal(await sweepDeadlines(rt.db, deadline, 100), 0, 'the sweep at the deadline leaves the step of a process being changed')
  release()
  await hold
  const done = await advancing
  t.equal(done.statusCode, 200, done.body)
  t.match(done.data.steps[0], { state: 'done', endedAt: new Date(deadline.getTime() - 1).toISOString() }, 'it ended before its deadline')
  rt.clock.set(new Date(deadline.getTime() + HOUR))
  t.equal(await sweepDeadlines(rt.db, rt.clock.now(), 100), 0, 'and a later sweep finds it ended')
  await rt.scheduler.runOnce()
  t.equal(mailsAbout('Deadline missed: "Sign at the notary"').length, 0, 'and no mail says it missed it')
  const { rows } = await sql<{ n: number }>`
    select count(*)::int as n from outbox_mails where kind = 'deadlineMissed' and subject like '%Sign at the notary%'`.execute(rt.db)
  t.equal(rows[0]!.n, 0, 'none queued')
})

t.test('a sweep that left a step because its process was held reports it once the holder lets go without ending it', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Renew the listing', deadlineDays: 1 }])
  const instance = await rt.start(templateId, { propertyId: undefined })
  const deadline = new Date(instance.steps[0].deadlineAt)
  let release!: () => void
  let held!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  const holding = new Promise<void>((resolve) => { held = resolve })
  const hold = rt.db.transaction().execute(async (trx) => {
    await sql`select id from process_instances where tenant_id = ${rt.tenant.id} and id = ${instance.id} for update`.execute(trx)
    held()
    await released
  })
  await holding
  t.equal(await sweepDeadlines(rt.db, deadline, 100), 0, 'left while another transaction holds the process')
  release()
  await hold
  rt.clock.set(deadline)
  const runs = await Promise.all([rt.scheduler.runOnce(), rt.newScheduler().runOnce()])
  t.equal(runs[0].deadlines + runs[1].deadlines, 1, 'reported by the next sweep, by one worker')
  await rt.scheduler.runOnce()
  t.equal(mailsAbout('Deadline missed: "Renew the listing"').length, 1, 'one mail')
})

t.test('a tenant being deleted has no mail sent: its due mail is not claimed while the deletion waits, another tenant\'s is', async (t) => {
  await sql`update outbox_mails set sent_at = now() where sent_at is null`.execute(rt.db)
  const going = await rt.newTenant({ name: 'Going GmbH' })
  for (const [tenantId, subject] of [[going.id, 'Going mail'], [rt.tenant.id, 'Staying mail']]) {
    await sql`insert into outbox_mails (tenant_id, id, dedupe_key, kind, to_address, subject, body, next_attempt_at)
      values (${tenantId}, gen_random_uuid(), ${subject}, 'stepSkipped', 'clara@example.com', ${subject}, 'A step was skipped.', ${rt.clock.now()})`.execute(rt.db)
  }
  const deletion = await heldDeletion(rt, going.id)
  const now = rt.clock.now()
  const claimed = await claimMails(rt.db, { now, leaseUntil: new Date(now.getTime() + 60_000), limit: 100 })
  t.same(claimed.mails.map((mail) => mail.subject), ['Staying mail'], 'only the other tenant\'s mail is claimed')
  await releaseMails(rt.db, claimed.mails)
  t.equal((await deletion.finish()).statusCode, 204)
})

t.test('a tenant being deleted has no deadline reported: its overdue step is left while the deletion waits, another tenant\'s is reported', async (t) => {
  const going = await rt.newRuntimeTenant('Going GmbH')
  const goingId = (await going.start(await going.template([{ kind: 'task', name: 'Going deadline', deadlineDays: 1 }]))).id
  const stayingId = (await rt.start(await rt.template([{ kind: 'task', name: 'Staying deadline', deadlineDays: 1 }]))).id
  rt.clock.advance(25 * HOUR)
  const deletion = await heldDeletion(rt, going.tenant.id)
  await sweepDeadlines(rt.db, rt.clock.now(), 100)
  const { rows } = await sql<{ instance_id: string; reported: boolean }>`
    select instance_id, deadline_notified_at is not null as reported from instance_steps where instance_id in (${goingId}, ${stayingId})`.execute(rt.db)
  t.same(Object.fromEntries(rows.map((row) => [row.instance_id, row.reported])), { [goingId]: false, [stayingId]: true },
    'the other tenant\'s step is reported; the going tenant\'s is left until the deletion takes it')
  const { rows: mails } = await sql<{ subject: string }>`select subject from outbox_mails where tenant_id = ${going.tenant.id}`.execute(rt.db)
  t.same(mails, [], 'no mail is queued for the going tenant')
  t.equal((await deletion.finish()).statusCode, 204)
})

t.test('a step\'s name with line breaks gives a mail subject on one line; the body keeps the name as it is', async (t) => {
  const name = 'Check\nthe\u2028keys\u0085twice\r\n'
  const templateId = await rt.template([{ kind: 'task', name, deadlineDays: 1 }, { kind: 'task', name: 'Hand them over' }])
  const instance = await rt.start(templateId)
  rt.clock.advance(25 * HOUR)
  await rt.scheduler.runOnce()
  const skipped = await rt.api.post(`/v1/process-instances/${instance.id}/advance`, { outcome: 'skipped' })
  // Not the body as the message: it holds the name's U+0085 and U+2028 as they are, which break tap's stream.
  t.equal(skipped.statusCode, 200, 'the step is skipped')
  await rt.scheduler.runOnce()

  const mails = mailsAbout('"Check the keys twice "')
  t.same(mails.map((m) => m.subject).sort(), [
    'Deadline missed: "Check the keys twice " in "Re-value a property" (1 hour late)',
    'Step skipped: "Check the keys twice " in "Re-value a property"'
  ], 'each subject reads the name on one line, every run of line breaks a space')
  for (const mail of mails) t.match(mail.text, /"Check\r?\nthe/, 'the body keeps the name\'s own lines')
})
