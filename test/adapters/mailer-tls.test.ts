import { createServer, type AddressInfo, type Socket } from 'node:net'
import t from 'tap'
import { createMailer } from '../../src/adapters/mailer.js'
import { runScript } from '../helpers/process.js'
import { TestSmtpServer } from '../helpers/smtp.js'
import { makeCertificates } from '../helpers/tls.js'

// Real relays speak TLS and want a login: smtps:// (implicit TLS, port 465) or smtp:// upgraded with
// STARTTLS (port 587), AUTH PLAIN or LOGIN. Certificates are made for the test (test/helpers/tls.ts).
const certs = await makeCertificates(t)
const mail = { from: 'baton@example.com', to: 'clara@example.com', subject: 'Over TLS', text: 'Hello', messageId: '<tls@baton>' }
/** A password with every character a URL's userinfo cannot hold as it is. */
const PASSWORD = 'p@ss:w/rd?#% 100%25 ü€ \'"'

/** What became of a mail sent through each URL by a process that trusts the test's CA (NODE_EXTRA_CA_CERTS). */
async function sendTrusting(urls: string[]): Promise<{ sent: boolean; code?: string; message?: string }[]> {
  const child = runScript('test/helpers/send-mails.ts', { NODE_EXTRA_CA_CERTS: certs.caFile }, urls)
  await child.exited
  const lines = child.output().split('\n').filter((line) => line.startsWith('{'))
  if (lines.length !== urls.length) throw new Error(`not an outcome for each URL; output:\n${child.output()}`)
  return lines.map((line) => JSON.parse(line))
}

// One process for all of them: each takes most of a second to start.
t.test('with a CA named in NODE_EXTRA_CA_CERTS, mails arrive over TLS logged in with a percent-encoded password; a certificate for another host is refused, unless ?tls.servername= names it', async (t) => {
  const login = { user: 'baton@example.com', password: PASSWORD }
  const servers = await Promise.all([
    TestSmtpServer.start({ authMethods: ['PLAIN', 'LOGIN'] }, { tls: { ...certs.good, implicit: true }, login }),
    TestSmtpServer.start({ authMethods: ['PLAIN', 'LOGIN'] }, { tls: { ...certs.good, implicit: false }, login }),
    TestSmtpServer.start({ authMethods: ['LOGIN'] }, { tls: { ...certs.good, implicit: true }, login }),
    TestSmtpServer.start({}, { tls: { ...certs.otherName, implicit: true }, login }),
    TestSmtpServer.start({}, { tls: { ...certs.otherName, implicit: false }, login }),
    TestSmtpServer.start({}, { tls: { ...certs.otherName, implicit: true }, login })
  ])
  t.teardown(() => Promise.all(servers.map((smtp) => smtp.close())))
  const [smtps, starttls, authLogin, otherSmtps, otherStarttls, named] = servers
  // The last is reached by another name than its certificate's: ?tls.servername= says which to expect.
  const outcomes = await sendTrusting([...servers.slice(0, -1).map((smtp) => smtp.url), `${named!.url}?tls.servername=other.example`])
  for (const [name, smtp, outcome, method] of [
    ['smtps://', smtps!, outcomes[0], 'PLAIN'], ['smtp:// and STARTTLS', starttls!, outcomes[1], 'PLAIN'], ['AUTH LOGIN', authLogin!, outcomes[2], 'LOGIN'],
    ['?tls.servername=', named!, outcomes[5], 'PLAIN']
  ] as const) {
    t.same(outcome, { sent: true }, `${name}: sent`)
    t.same(smtp.logins, [{ method, username: login.user, password: login.password }], `${name}: user and password decoded as written`)
    t.match(smtp.mails, [{ subject: 'Over TLS', secure: true, user: login.user }], `${name}: arrived over TLS, logged in`)
  }
  for (const [name, smtp, outcome] of [['smtps://', otherSmtps!, outcomes[3]], ['STARTTLS', otherStarttls!, outcomes[4]]] as const) {
    t.match(outcome, { sent: false, code: 'ESOCKET', message: /Hostname\/IP does not match certificate's altnames/ }, `${name}: another host's certificate is refused`)
    t.same(smtp.logins, [], `${name}: the password never went to that server`)
    t.same(smtp.mails, [])
  }
})

t.test('a self-signed certificate, or one of a CA not trusted, is refused with a clear error; no password offered', async (t) => {
  for (const [pair, implicit] of [[certs.selfSigned, true], [certs.selfSigned, false], [certs.good, true], [certs.good, false]] as const) {
    const smtp = await TestSmtpServer.start({}, { tls: { ...pair, implicit }, login: { user: 'baton', password: PASSWORD } })
    const mailer = createMailer({ smtpUrl: smtp.url, mailDir: '', timeoutMs: 2000 })
    await t.rejects(mailer.send(mail), { code: 'ESOCKET', command: 'CONN', message: /self-signed certificate|unable to verify the first certificate/ })
    mailer.close()
    await smtp.close()
    t.same(smtp.logins, [], 'the password never went to that server')
    t.same(smtp.mails, [])
  }
})

t.test('SMTP_URL takes nodemailer\'s options as query parameters: ?tls.rejectUnauthorized=false accepts any certificate (only when asked)', async (t) => {
  const smtp = await TestSmtpServer.start({}, { tls: { ...certs.selfSigned, implicit: true }, login: { user: 'baton', password: PASSWORD } })
  t.teardown(() => smtp.close())
  const mailer = createMailer({ smtpUrl: `${smtp.url}?tls.rejectUnauthorized=false`, mailDir: '', timeoutMs: 2000 })
  t.teardown(() => mailer.close())
  await mailer.send(mail)
  t.equal(smtp.mails.length, 1)
})

t.test('wrong credentials: the send fails with the server\'s 535 to AUTH (not to the mail), and the password is in no part of the error', async (t) => {
  const smtp = await TestSmtpServer.start({}, { tls: { ...certs.selfSigned, implicit: true }, login: { user: 'baton', password: PASSWORD } })
  t.teardown(() => smtp.close())
  smtp.password = 'the relay\'s new password'
  const mailer = createMailer({ smtpUrl: `${smtp.url}?tls.rejectUnauthorized=false`, mailDir: '', timeoutMs: 2000 })
  t.teardown(() => mailer.close())
  const error = await mailer.send(mail).then(() => undefined, (e: unknown) => e)
  t.match(error, { code: 'EAUTH', responseCode: 535, command: /^AUTH / })
  const told = JSON.stringify({ ...(error as object), message: String(error), stack: (error as Error).stack })
  for (const form of [PASSWORD, encodeURIComponent(PASSWORD), Buffer.from(PASSWORD).toString('base64')]) t.notOk(told.includes(form), 'no form of the password in the error')
})

t.test('?requireTLS=true and a server that offers no STARTTLS: the send fails before any password is sent', async (t) => {
  const smtp = await TestSmtpServer.start({ allowInsecureAuth: true }, { login: { user: 'baton', password: PASSWORD } })
  t.teardown(() => smtp.close())
  const mailer = createMailer({ smtpUrl: `${smtp.url}?requireTLS=true`, mailDir: '', timeoutMs: 2000 })
  t.teardown(() => mailer.close())
  await t.rejects(mailer.send(mail), { code: 'ETLS', command: 'STARTTLS' })
  t.same(smtp.logins, [])
  t.same(smtp.mails, [])
})

t.test('smtp:// with a login and a server that offers no STARTTLS (or someone between who struck it out): the password is not sent in the clear', async (t) => {
  // The server would read a login in the clear, as one a man in the middle stands in for would.
  const smtp = await TestSmtpServer.start({ allowInsecureAuth: true }, { login: { user: 'baton', password: PASSWORD } })
  t.teardown(() => smtp.close())
  const mailer = createMailer({ smtpUrl: smtp.url, mailDir: '', timeoutMs: 2000 })
  t.teardown(() => mailer.close())
  await t.rejects(mailer.send(mail), { code: 'ETLS', command: 'STARTTLS' }, 'the send fails: the server offered no TLS')
  t.same(smtp.logins, [], 'no password went over the plain connection')
  t.same(smtp.mails, [])
  // ?ignoreTLS=false says nothing against TLS, and a login given as auth.user is a login all the same.
  for (const url of [`${smtp.url}?ignoreTLS=false`, `smtp://127.0.0.1:${new URL(smtp.url).port}?auth.user=baton&auth.pass=${encodeURIComponent(PASSWORD)}`]) {
    const asking = createMailer({ smtpUrl: url, mailDir: '', timeoutMs: 2000 })
    t.teardown(() => asking.close())
    await t.rejects(asking.send(mail), { code: 'ETLS', command: 'STARTTLS' }, `?${url.replace(/.*\?([^=]*).*/, '$1')}: the send fails`)
  }
  t.same(smtp.logins, [], 'no password went over the plain connection')

  // A relay on a trusted network without TLS: the operator says so in the URL.
  const inTheClear = createMailer({ smtpUrl: `${smtp.url}?requireTLS=false`, mailDir: '', timeoutMs: 2000 })
  t.teardown(() => inTheClear.close())
  await inTheClear.send(mail)
  t.match(smtp.logins, [{ username: 'baton', password: PASSWORD }])
  t.match(smtp.mails, [{ secure: false, user: 'baton' }])
})

t.test('smtp:// without a login still sends in the clear to a server that offers no STARTTLS (an internal relay on port 25)', async (t) => {
  const smtp = await TestSmtpServer.start()
  t.teardown(() => smtp.close())
  const mailer = createMailer({ smtpUrl: smtp.url, mailDir: '', timeoutMs: 2000 })
  t.teardown(() => mailer.close())
  await mailer.send(mail)
  t.match(smtp.mails, [{ secure: false }])
})

t.test('a server that takes mail only over TLS, and a client told not to upgrade (?ignoreTLS=true): refused at AUTH, retried later, not sent', async (t) => {
  const smtp = await TestSmtpServer.start({}, { tls: { ...certs.selfSigned, implicit: false }, login: { user: 'baton', password: PASSWORD } })
  t.teardown(() => smtp.close())
  const mailer = createMailer({ smtpUrl: `${smtp.url}?ignoreTLS=true`, mailDir: '', timeoutMs: 2000 })
  t.teardown(() => mailer.close())
  await t.rejects(mailer.send(mail), { code: 'EAUTH', command: /^AUTH /, message: /STARTTLS/ })
  t.same(smtp.logins, [], 'the server refused to read the password in the clear')
  t.same(smtp.mails, [])
})

t.test('a TLS handshake that never ends (smtps, or after STARTTLS) fails the send within its deadline', async (t) => {
  // Accepts, and then says nothing (smtps); or greets, offers STARTTLS, answers 220 to it, and falls silent.
  const sockets = new Set<Socket>()
  const silent = (greet: boolean) => createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => undefined)
    if (!greet) return
    socket.write('220 stuck.example ESMTP\r\n')
    socket.on('data', (chunk) => {
      const line = chunk.toString('latin1').toUpperCase()
      if (line.startsWith('EHLO')) socket.write('250-stuck.example\r\n250 STARTTLS\r\n')
      else if (line.startsWith('STARTTLS')) { socket.write('220 go ahead\r\n'); socket.removeAllListeners('data'); socket.resume() }
    })
  })
  const servers = [silent(false), silent(true)]
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))))
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    for (const server of servers) server.close()
  })
  for (const [scheme, server] of [['smtps', servers[0]!], ['smtp', servers[1]!]] as const) {
    const mailer = createMailer({ smtpUrl: `${scheme}://baton:pw@localhost:${(server.address() as AddressInfo).port}`, mailDir: '', timeoutMs: 300 })
    const started = Date.now()
    await t.rejects(mailer.send(mail), { code: 'ETIMEDOUT' }, scheme)
    t.ok(Date.now() - started <= mailer.sendDeadlineMs! + 500, `${scheme}: ended by the send's deadline at the latest`)
    mailer.close()
  }
})
