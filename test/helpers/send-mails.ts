import { createMailer } from '../../src/adapters/mailer.js'

// Sends one mail through the mailer Baton builds from each SMTP URL given as an argument, in a process
// of its own (where NODE_EXTRA_CA_CERTS, read once at start, can name a test's CA), and prints a line
// of JSON for each: what became of its mail.
for (const smtpUrl of process.argv.slice(2)) {
  const mailer = createMailer({ smtpUrl, mailDir: '', timeoutMs: 2000 })
  try {
    await mailer.send({ from: 'baton@example.com', to: 'clara@example.com', subject: 'Over TLS', text: 'Hello', messageId: '<tls@baton>' })
    console.log(JSON.stringify({ sent: true }))
  } catch (error) {
    const { code, command } = error as { code?: string; command?: string }
    console.log(JSON.stringify({ sent: false, code, command, message: String(error) }))
  } finally {
    mailer.close()
  }
}
