import { readFileSync, watch } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SMTPServer } from 'smtp-server'
import t from 'tap'
import { createMailer } from '../../src/adapters/mailer.js'
import { TestSmtpServer } from '../helpers/smtp.js'

const mail = {
  from: 'Baton <baton@example.com>', to: 'clara@example.com', subject: 'Deadline missed: "Call the owner"',
  text: 'Hello Clara,\n\nthe step is late.', messageId: '<01a22273-5e34-700d-9c3d-fde98d584b88@baton>'
}

t.test('without SMTP, each mail becomes an .eml file named after its id', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'baton-mail-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const mailer = createMailer({ mailDir: join(dir, 'mail') })
  await mailer.send(mail)
  mailer.close()
  const files = await readdir(join(dir, 'mail'))
  t.equal(files.length, 1)
  t.match(files[0], /^\d{4}-\d\d-\d\dT[\d-]+Z-01a22273-5e34-700d-9c3d-fde98d584b88\.eml$/)
  const raw = await readFile(join(dir, 'mail', files[0]!), 'utf8')
  t.match(raw, /^Message-ID: <01a22273-5e34-700d-9c3d-fde98d584b88@baton>$/m)
  t.match(raw, /^To: clara@example\.com$/m)
})

t.test('without SMTP, a mail folder that cannot be made fails the send, so the outbox keeps the mail', { skip: process.platform !== 'linux' && 'needs Linux\'s /proc' }, async (t) => {
  // /proc refuses children with ENOENT, where Node's recursive mkdir made /proc again without end: the send never settled.
  const mailer = createMailer({ mailDir: '/proc/baton-nowhere/mail' })
  await t.rejects(mailer.send(mail), { code: 'ENOENT' })
  mailer.close()
})

t.test('with SMTP, the mail reaches the server with its Message-ID', async (t) => {
  const smtp = await TestSmtpServer.start()
  t.teardown(() => smtp.close())
  const mailer = createMailer({ smtpUrl: smtp.url, mailDir: '' })
  await mailer.send(mail)
  mailer.close()
  t.equal(smtp.mails.length, 1)
  t.equal(smtp.mails[0]!.subject, mail.subject)
  t.equal(smtp.mails[0]!.messageId, mail.messageId)
  t.match(smtp.mails[0]!.text, /the step is late/)
})

t.test('an SMTP server refusing the mail makes send fail, so the outbox keeps it', async (t) => {
  const smtp = await TestSmtpServer.start()
  t.teardown(() => smtp.close())
  smtp.refusing = true
  const mailer = createMailer({ smtpUrl: smtp.url, mailDir: '' })
  await t.rejects(mailer.send(mail))
  mailer.close()
  t.equal(smtp.mails.length, 0)
})

t.test('with SMTP, the transport is pooled and timed: mails share a connection, and a server that never answers the final dot fails the send', async (t) => {
  let connections = 0
  let answering = true
  // A real server that takes the whole message and then, when told, never answers its final dot.
  const server = new SMTPServer({
    authOptional: true, disabledCommands: ['STARTTLS', 'AUTH'], logger: false,
    onConnect: (_session, callback) => { connections += 1; callback() },
    onData: (stream, _session, callback) => {
      stream.resume()
      stream.on('end', () => { if (answering) callback() })
    }
  })
  server.on('error', () => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const mailer = createMailer({ smtpUrl: `smtp://127.0.0.1:${(server.server.address() as AddressInfo).port}`, mailDir: '', timeoutMs: 500 })
  t.teardown(() => {
    mailer.close()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })

  await mailer.send(mail)
  await mailer.send({ ...mail, messageId: '<second@baton>' })
  t.equal(connections, 1, 'the second mail went over the first one\'s connection')

  answering = false
  const started = Date.now()
  // Before, the options went to nodemailer as message defaults: no pool, and its own 10-minute socket timeout.
  const outcome = await Promise.race([
    mailer.send({ ...mail, messageId: '<third@baton>' }).then(() => 'sent', (error: unknown) => error),
    new Promise((resolve) => setTimeout(resolve, 10_000, 'still waiting after 10 s').unref())
  ])
  t.match(outcome, { code: 'ETIMEDOUT' }, 'the send fails once the socket has been quiet for the timeout')
  t.ok(Date.now() - started < 5000, 'well within the 10 s')
})

t.test('a server that answers the final dot a byte at a time, never falling silent, fails the send at its deadline and loses its connection', async (t) => {
  // Speaks just enough SMTP to take a mail, then answers the final dot with "250-" lines forever.
  const sockets = new Set<Socket>()
  let closed = 0
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => { closed += 1; sockets.delete(socket) })
    socket.on('error', () => undefined)
    let data = false
    let text = ''
    socket.write('220 drip.example ESMTP\r\n')
    socket.on('data', (chunk) => {
      text += chunk.toString('latin1')
      if (data) {
        if (!text.includes('\r\n.\r\n')) return
        const drip = setInterval(() => socket.writable ? socket.write('250-still thinking\r\n') : clearInterval(drip), 100)
        socket.on('close', () => clearInterval(drip))
        text = ''
        data = false
        return
      }
      for (let end = text.indexOf('\r\n'); end >= 0; end = text.indexOf('\r\n')) {
        const line = text.slice(0, end).toUpperCase()
        text = text.slice(end + 2)
        if (line.startsWith('EHLO') || line.startsWith('HELO')) socket.write('250 drip.example\r\n')
        else if (line.startsWith('DATA')) { data = true; socket.write('354 go ahead\r\n'); return }
        else if (line.startsWith('QUIT')) socket.end('221 bye\r\n')
        else socket.write('250 ok\r\n')
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  const mailer = createMailer({ smtpUrl: `smtp://127.0.0.1:${(server.address() as AddressInfo).port}`, mailDir: '', timeoutMs: 300 })
  t.teardown(() => mailer.close())
  const started = Date.now()
  await t.rejects(mailer.send(mail), { code: 'ETIMEDOUT', message: /took more than 1200 ms for one mail/ })
  t.ok(Date.now() - started < 5000, 'within its deadline of four timeouts, not whenever the server stops')
  for (let waited = 0; closed === 0 && waited < 50; waited++) await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(closed, 1, 'the dripping connection is closed')
  await t.rejects(mailer.send(mail), { code: 'ETIMEDOUT' }, 'a later send goes out on a new connection, and meets its own deadline')
})

t.test('without SMTP, each mail written is logged with its file, recipient and subject, so a developer learns of it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'baton-mail-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const lines: { obj: Record<string, unknown>; msg: string | undefined }[] = []
  const mailer = createMailer({ mailDir: join(dir, 'mail'), log: { info: (obj, msg) => lines.push({ obj: obj as Record<string, unknown>, msg }) } })
  await mailer.send(mail)
  mailer.close()
  const [file] = await readdir(join(dir, 'mail'))
  t.equal(lines.length, 1, 'one line for the one mail')
  t.same(lines[0]!.obj, { file: join(dir, 'mail', file!), to: 'clara@example.com', subject: mail.subject })
  t.match(lines[0]!.msg, /SMTP_URL/)
})

t.test('without SMTP, an .eml file is whole once its name shows: a mail client or a watcher never reads half a mail', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'baton-mail-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const mailDir = join(dir, 'mail')
  await mkdir(mailDir)
  const mailer = createMailer({ mailDir })
  // A developer's tool that opens each new .eml file as soon as it appears.
  const reads: { name: string; bytes: number }[] = []
  const watcher = watch(mailDir, (_event, name) => {
    if (!name?.endsWith('.eml')) return
    try {
      reads.push({ name, bytes: readFileSync(join(mailDir, name)).length })
    } catch {
      // Not there (any more).
    }
  })
  const text = 'x'.repeat(1_000_000)
  await Promise.all(Array.from({ length: 10 }, (_, i) => mailer.send({
    ...mail, text, messageId: `<01a22273-5e34-700d-9c3d-${String(i).padStart(12, '0')}@baton>`
  })))
  await new Promise((resolve) => setTimeout(resolve, 200))
  watcher.close()
  mailer.close()
  const files = await readdir(mailDir)
  t.equal(files.length, 10, 'ten mails, ten files')
  t.ok(files.every((name) => name.endsWith('.eml')), 'no partial file left behind')
  const sizes = new Map(await Promise.all(files.map(async (name) => [name, (await readFile(join(mailDir, name))).length] as const)))
  t.ok(reads.length > 0, 'the watcher saw the files')
  t.same(reads.filter((read) => read.bytes !== sizes.get(read.name)), [], 'every read of an .eml name found the whole mail')
})

t.test('without SMTP, a mail that cannot be written fails its send and leaves no file behind, so the outbox retries it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'baton-mail-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, 'mail'), 'a file where the directory should be')
  const mailer = createMailer({ mailDir: join(dir, 'mail') })
  await t.rejects(mailer.send(mail), { code: 'EEXIST' })
  mailer.close()
  t.same(await readdir(dir), ['mail'])
})

t.test('a line break written as a bare CR (a name, a note or a body from an old client) breaks the line in an .eml file as it does over SMTP', async (t) => {
  const text = 'Hello Clara,\r\rthe step "Call\rthe owner" is late.\r\nNote:        one\rtwo'
  const smtp = await TestSmtpServer.start()
  const overSmtp = createMailer({ smtpUrl: smtp.url, mailDir: '' })
  await overSmtp.send({ ...mail, text })
  overSmtp.close()
  await smtp.close()
  const expected = 'Hello Clara,\n\nthe step "Call\nthe owner" is late.\nNote:        one\ntwo'
  t.equal(smtp.mails[0]!.text.replace(/\r\n/g, '\n').trimEnd(), expected, 'over SMTP each bare CR is a line break')

  const dir = await mkdtemp(join(tmpdir(), 'baton-mail-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const toFile = createMailer({ mailDir: dir })
  await toFile.send({ ...mail, text })
  toFile.close()
  const [file] = await readdir(dir)
  const raw = await readFile(join(dir, file!), 'utf8')
  t.equal(raw.split('\n\n').slice(1).join('\n\n').trimEnd(), expected, 'and so in the file, not words run together')
})
