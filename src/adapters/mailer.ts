import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import nodemailer from 'nodemailer'

export interface Mail {
  from: string
  to: string
  subject: string
  text: string
  /** Stable across retries, so a receiving server can spot a duplicate. */
  messageId: string
}

export interface Mailer {
  send(mail: Mail): Promise<void>
  close(): void
}

/** SMTP when a URL is given; otherwise each mail becomes an .eml file a developer can open. */
export function createMailer(options: { smtpUrl?: string | undefined; mailDir: string; timeoutMs?: number }): Mailer {
  if (options.smtpUrl) return smtpMailer(options.smtpUrl, options.timeoutMs ?? 15_000)
  return fileMailer(options.mailDir)
}

// A pooled transport keeps its SMTP connections open between mails: a connection per mail (connect,
// greeting, EHLO, QUIT) made a burst of deadline mails go out at about 15 a second. The options go
// in one object with the URL (which wins where both set one): a second argument is only the mails'
// defaults, and left the transport unpooled, on nodemailer's own timeouts (a server that never
// answered the final dot held the mail pump for ten minutes).
function smtpMailer(url: string, timeoutMs: number): Mailer {
  const transport = nodemailer.createTransport({
    url,
    pool: true,
    maxConnections: 4,
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs
  })
  return {
    async send(mail) {
      await transport.sendMail(mail)
    },
    close: () => transport.close()
  }
}

function fileMailer(dir: string): Mailer {
  const transport = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'unix' })
  return {
    async send(mail) {
      const info = await transport.sendMail(mail)
      await mkdir(dir, { recursive: true })
      const name = `${new Date().toISOString().replace(/[:.]/g, '-')}-${mail.messageId.replace(/^<|@.*$/g, '').replace(/[^A-Za-z0-9-]/g, '')}.eml`
      await writeFile(join(dir, name), info.message as Buffer)
    },
    close: () => transport.close()
  }
}
