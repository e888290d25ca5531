import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
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
