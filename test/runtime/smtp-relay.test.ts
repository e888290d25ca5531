import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { createMailer } from '../../src/adapters/mailer.js'
import { sql } from '../../src/db/kysely.js'
import { STEP_MAIL_MAX_ATTEMPTS } from '../../src/scheduler/email-steps.js'
import { HOUR } from '../helpers/clock.js'
import { runScript, workerEnv } from '../helpers/process.js'
import { setupRuntime } from '../helpers/runtime.js'
import { TestSmtpServer } from '../helpers/smtp.js'
import { makeCertificates } from '../helpers/tls.js'

// A relay as production uses one (TLS, a login) that refuses Baton: the mails stay queued and are
// retried, an email step's mail is not given up as refused for good, and the password shows nowhere.
const rt = await setupRuntime(t)
const certs = await makeCertificates(t)
const PASSWORD = 'p@ss:w/rd?#% 100%25 ü€'
/** Every form the password could be written in: as it is, percent-encoded (as in SMTP_URL), and as AUTH PLAIN and LOGIN send it. */
const FORMS = [PASSWORD, encodeURIComponent(PASSWORD), Buffer.from(PASSWORD).toString('base64'), Buffer.from(`\0baton\0${PASSWORD}`).toString('base64')]

const states = (view: { steps: { state: string }[] }) => view.steps.map((s) => s.state)

interface OutboxRow { attempt_count: number; next_attempt_at: Date; lease_expires_at: Date | null; last_error: string | null; failed_at: Date | null; sent_at: Date | null }
async function mailOf(stepId: string): Promise<OutboxRow> {
  const { rows: [row] } = await sql<OutboxRow>`
    select attempt_count, next_attempt_at, lease_expires_at, last_error, failed_at, sent_at from outbox_mails where step_id = ${stepId}`.execute(rt.db)
  return row!
}

/** A scheduler mailing through `url`, whose warnings and errors are kept, and a process of one automatic email step. */
async function mailingThrough(url: string, name: string, timeoutMs = 2000) {
  const mailer = createMailer({ smtpUrl: url, mailDir: '', timeoutMs })
  t.teardown(() => mailer.close())
  const lines: string[] = []
  const keep = (obj: object, msg?: string) => void lines.push(JSON.stringify({ ...obj, err: errorFields((obj as { err?: unknown }).err) }) + (msg ?? ''))
  const scheduler = rt.newScheduler({}, { info: keep, warn: keep, error: keep }, { mailer })
  // The mails an earlier test left queued are not this one's.
  await sql`update outbox_mails set sent_at = now() where sent_at is null and failed_at is null`.execute(rt.db)
  const templateId = await rt.template([{ kind: 'email', name, email: { mode: 'automatic', to: 'assignee', subject: name, body: 'Hi' } }])
  const started = await rt.start(templateId)
  return { scheduler, lines, started, stepId: started.steps[0].id as string }
}

/** An error as pino writes it: its message, stack and own fields. */
function errorFields(error: unknown): unknown {
  return error instanceof Error ? { ...error, message: error.message, stack: error.stack } : error
}

t.test('wrong credentials (535): the email step\'s mail stays queued and is retried with backoff, not given up; once the login works it goes', async (t) => {
  const smtp = await TestSmtpServer.start({}, { tls: { ...certs.selfSigned, implicit: true }, login: { user: 'baton', password: PASSWORD } })
  t.teardown(() => smtp.close())
  smtp.password = 'the relay\'s new password'
  // The certificate is self-signed: this test is about the login, not about trusting it (test/adapters/mailer-tls.test.ts).
  const { scheduler, lines, started, stepId } = await mailingThrough(`${smtp.url}?tls.rejectUnauthorized=false`, 'Mail through a relay refusing the login')

  // A 5xx to AUTH refuses Baton's login, not the mail: were it taken for a refusal for good, the step
  // would fail into a manual one at the first attempt (its mail given up) instead of after its attempts.
  const ATTEMPTS = 3
  t.ok(ATTEMPTS < STEP_MAIL_MAX_ATTEMPTS)
  let backoff = 0
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    await scheduler.runOnce()
    const row = await mailOf(stepId)
    t.match(row, { attempt_count: attempt, failed_at: null, sent_at: null, lease_expires_at: null, last_error: /535/ }, `attempt ${attempt}: kept queued`)
    const wait = row.next_attempt_at.getTime() - rt.clock.now().getTime()
    t.ok(wait > backoff, `attempt ${attempt}: due again after a longer backoff (${wait} ms)`)
    backoff = wait
    t.same(states(await rt.instance(started.id)), ['running'], `attempt ${attempt}: the step waits for its mail`)
    rt.clock.advance(HOUR)
  }
  t.equal(smtp.logins.length, ATTEMPTS, 'one login a pass')
  t.ok(smtp.logins.every((login) => login.username === 'baton' && login.password === PASSWORD), 'the password decoded from SMTP_URL')
  t.match(lines.find((line) => line.includes('sending a mail failed')), /535/, 'each failure is logged with the server\'s answer')

  // While the mail fails: the password in none of the log lines, the outbox, the API's answers, /metrics or the whole database.
  const metrics = await rt.operator.get('/metrics')
  const answers = [
    JSON.stringify((await rt.api.get(`/v1/process-instances/${started.id}`)).data),
    JSON.stringify((await rt.api.get(`/v1/process-instances/${started.id}/activities`)).data),
    metrics.body
  ]
  t.equal(metrics.statusCode, 200)
  const { stdout: dump } = await promisify(execFile)('pg_dump', ['--data-only', rt.databaseUrl], { maxBuffer: 64 * 1024 * 1024 })
  t.match(dump, /535/, 'the dump holds the outbox\'s errors')
  for (const [where, text] of [['log', lines.join('\n')], ['API answers and /metrics', answers.join('\n')], ['database', dump]] as const) {
    t.notOk(FORMS.some((form) => text.includes(form)), `no form of the password in the ${where}`)
  }

  smtp.password = PASSWORD
  await scheduler.runOnce()
  t.match(await mailOf(stepId), { sent_at: Date, failed_at: null })
  t.same(states(await rt.instance(started.id)), ['done'], 'the step is done once its mail went')
  t.equal(smtp.mails.length, 1)
})

// Each pass opened eight lanes against a relay refusing the login and put back at once every mail it had
// not tried: eight failed logins about every second, for as long as mail was due. Microsoft 365, Gmail
// or fail2ban lock an account or an address out for fewer.
t.test('a relay refusing the login meets one login a hold, not one a lane every pass: the worker holds its mail (10 s, then doubling), tries one alone, and opens its window once the login works', async (t) => {
  const smtp = await TestSmtpServer.start({}, { tls: { ...certs.selfSigned, implicit: true }, login: { user: 'baton', password: PASSWORD } })
  t.teardown(() => smtp.close())
  smtp.password = 'the relay\'s new password'
  const { scheduler, lines } = await mailingThrough(`${smtp.url}?tls.rejectUnauthorized=false`, 'A relay locking out')
  for (let i = 1; i <= 40; i++) {
    await sql`insert into outbox_mails (tenant_id, id, dedupe_key, kind, to_address, subject, body, next_attempt_at)
      values (${rt.tenant.id}, gen_random_uuid(), ${`lockout-${i}`}, 'deadlineMissed', 'clara@example.com', ${`Locked out ${i}`}, 'body', ${rt.clock.now()})`.execute(rt.db)
  }
  const loginsAt: number[] = []
  for (let second = 0; second < 35; second++) {
    const before = smtp.logins.length
    await scheduler.runOnce()
    for (let i = before; i < smtp.logins.length; i++) loginsAt.push(second)
    rt.clock.advance(1000)
  }
  // Held 10 s after the first failure, then 20 s: logins at 0, 10 and 30 s.
  t.same(loginsAt, [0, 10, 30], 'one login, then one after each hold')
  const { rows } = await sql<{ attempt_count: number; n: number }>`
    select attempt_count, count(*)::int as n from outbox_mails where subject like 'Locked out %' and sent_at is null group by 1`.execute(rt.db)
  t.ok(rows.every((row) => row.attempt_count >= 1), `every mail of a pass that met the refusal waits its backoff with an attempt counted: ${JSON.stringify(rows)}`)
  t.match(lines.find((line) => line.includes('at the SMTP server itself')), /535.*heldForMs/, 'the warning says the server failed, and for how long mail is held')

  // The login works again: after the hold, one mail alone, then the window opens and the rest go out.
  smtp.password = PASSWORD
  const loginsBefore = smtp.logins.length
  rt.clock.advance(HOUR)
  await scheduler.runOnce()
  const sent = smtp.mails.filter((mail) => mail.subject.startsWith('Locked out ')).length
  t.equal(sent, 40, 'every mail goes out in the pass after the hold')
  t.ok(smtp.logins.length - loginsBefore <= 5, `a few logins for the window's connections (${smtp.logins.length - loginsBefore})`)
})

t.test('a relay whose certificate Baton does not trust: its mails stay queued with the reason, and no password goes to it', async (t) => {
  for (const implicit of [true, false]) {
    const smtp = await TestSmtpServer.start({}, { tls: { ...certs.selfSigned, implicit }, login: { user: 'baton', password: PASSWORD } })
    t.teardown(() => smtp.close())
    const { scheduler, lines, started, stepId } = await mailingThrough(smtp.url, `Mail through an untrusted relay (${implicit ? 'smtps' : 'STARTTLS'})`)
    await scheduler.runOnce()
    t.match(await mailOf(stepId), { attempt_count: 1, failed_at: null, sent_at: null, lease_expires_at: null, last_error: /self-signed certificate/ })
    t.same(states(await rt.instance(started.id)), ['running'], 'the step waits for its mail')
    t.match(lines.find((line) => line.includes('sending a mail failed')), /self-signed certificate/, 'the log says why')
    t.same(smtp.logins, [], 'no password went to it')
    t.equal(smtp.mails.length, 0)
  }
})

t.test('a relay that offers no STARTTLS to a URL asking for it (?requireTLS=true): the mail stays queued, nothing sent in the clear', async (t) => {
  const smtp = await TestSmtpServer.start({ allowInsecureAuth: true }, { login: { user: 'baton', password: PASSWORD } })
  t.teardown(() => smtp.close())
  const { scheduler, lines, started, stepId } = await mailingThrough(`${smtp.url}?requireTLS=true`, 'Mail through a relay without STARTTLS')
  await scheduler.runOnce()
  t.match(await mailOf(stepId), { attempt_count: 1, failed_at: null, sent_at: null, lease_expires_at: null, last_error: /STARTTLS/ })
  t.same(states(await rt.instance(started.id)), ['running'])
  t.match(lines.find((line) => line.includes('sending a mail failed')), /STARTTLS/)
  t.same(smtp.logins, [])
})

t.test('a TLS handshake that hangs: the send ends at its deadline, the mail goes back to the queue unleased', async (t) => {
  const sockets = new Set<Socket>()
  const server = createServer((socket) => { sockets.add(socket); socket.on('error', () => undefined) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  const port = (server.address() as AddressInfo).port
  const { scheduler, started, stepId } = await mailingThrough(`smtps://baton:pw@localhost:${port}`, 'Mail through a relay that never shakes hands', 300)
  const began = Date.now()
  await scheduler.runOnce()
  t.ok(Date.now() - began < 3000, 'the pass ended soon after the send\'s deadline')
  t.match(await mailOf(stepId), { attempt_count: 1, failed_at: null, sent_at: null, lease_expires_at: null, last_error: /timeout|ETIMEDOUT|took more than/i })
  t.same(states(await rt.instance(started.id)), ['running'])
})

// Last: the worker process works on the runtime's database until the test ends.
t.test('a worker process as npm run worker starts it, at LOG_LEVEL=trace, with a percent-encoded password in SMTP_URL and the relay\'s CA in NODE_EXTRA_CA_CERTS: it logs in with the password decoded, and no line it writes holds it', async (t) => {
  const smtp = await TestSmtpServer.start({}, { tls: { ...certs.good, implicit: true }, login: { user: 'baton', password: PASSWORD } })
  t.teardown(() => smtp.close())
  smtp.password = 'the relay\'s new password'
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-relay-'))
  t.teardown(() => rm(dataDir, { recursive: true, force: true }))
  await sql`update outbox_mails set sent_at = now() where sent_at is null and failed_at is null`.execute(rt.db)
  await sql`insert into outbox_mails (tenant_id, id, dedupe_key, kind, to_address, subject, body, next_attempt_at)
    values (${rt.tenant.id}, gen_random_uuid(), 'relay-worker', 'deadlineMissed', 'clara@example.com', 'Through the relay', 'body', now())`.execute(rt.db)
  const { rows: [database] } = await sql<{ name: string }>`select current_database() as name`.execute(rt.db)
  const worker = runScript('src/server.ts', {
    ...workerEnv(database!.name, dataDir, 'relay-worker'), LOG_LEVEL: 'trace', SMTP_URL: smtp.url, NODE_EXTRA_CA_CERTS: certs.caFile
  }, ['--role=worker'])
  t.teardown(async () => {
    if (worker.child.exitCode === null) worker.child.kill('SIGKILL')
    await worker.exited
  })
  await worker.waitFor(/Baton worker started/)
  await worker.waitFor(/sending a mail failed/)
  worker.child.kill('SIGTERM')
  await worker.exited
  t.same(smtp.logins.map((login) => login.password), [PASSWORD], 'the certificate trusted, the password decoded from the setting')
  t.match(worker.output(), /535/, 'the warning carries the server\'s answer')
  t.notOk(FORMS.some((form) => worker.output().includes(form)), 'no form of the password in anything the worker wrote')
  const { rows: [mail] } = await sql<{ sent_at: Date | null; failed_at: Date | null; attempt_count: number }>`
    select sent_at, failed_at, attempt_count from outbox_mails where dedupe_key = 'relay-worker'`.execute(rt.db)
  t.same(mail, { sent_at: null, failed_at: null, attempt_count: 1 }, 'the mail stays queued')
})
