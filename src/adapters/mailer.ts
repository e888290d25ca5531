import { rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import nodemailer from 'nodemailer'
import type { Logger } from '../lib/logger.js'
import { makeDirectory } from '../lib/make-directory.js'

interface Mail {
  from: string
  to: string
  subject: string
  text: string
  /** Stable across retries, so a receiving server can spot a duplicate. */
  messageId: string
  /** Further header fields, such as Auto-Submitted. */
  headers?: Record<string, string>
}

export interface Mailer {
  send(mail: Mail): Promise<void>
  /** The longest one send may take before it fails (none given: not long enough to count). */
  readonly sendDeadlineMs?: number
  close(): void
}

/**
 * SMTP when a URL is given; otherwise each mail becomes an .eml file a developer can open, whole
 * once its name shows, and a log line names the file (with its recipient and subject), so the
 * developer learns that one was written.
 */
export function createMailer(options: { smtpUrl?: string | undefined; mailDir: string; timeoutMs?: number; log?: Pick<Logger, 'info'> }): Mailer {
  if (options.smtpUrl) return smtpMailer(options.smtpUrl, options.timeoutMs ?? 15_000)
  return fileMailer(options.mailDir, options.log)
}

// A pooled transport keeps its SMTP connections open between mails: a connection per mail (connect,
// greeting, EHLO, QUIT) made a burst of deadline mails go out at about 15 a second. The options go
// in one object with the URL (which wins where both set one): a second argument is only the mails'
// defaults, and left the transport unpooled, on nodemailer's own timeouts (a server that never
// answered the final dot held the mail pump for ten minutes).
function smtpMailer(url: string, timeoutMs: number): Mailer {
  const open = () => nodemailer.createTransport({
    url,
    requireTLS: loginNeedsTls(url),
    pool: true,
    maxConnections: 4,
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs
  })
  let transport = open()
  // The timeouts above count silence: a server that answers a byte at a time never meets them. A
  // send has SEND_DEADLINES of them in all; past that its connections are closed (the sends sharing
  // them fail and are retried) and new ones opened, well before the mail's two-minute lease ends and
  // another worker would send it again.
  const deadlineMs = timeoutMs * SEND_DEADLINES
  return {
    sendDeadlineMs: deadlineMs,
    async send(mail) {
      const sending = transport.sendMail(mail)
      let timer: NodeJS.Timeout | undefined
      const late = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new MailTimeoutError(deadlineMs)), deadlineMs)
      })
      try {
        await Promise.race([sending, late])
      } catch (error) {
        if (error instanceof MailTimeoutError) {
          sending.catch(() => undefined)
          const stuck = transport
          transport = open()
          stuck.close({ force: true })
        }
        throw error
      } finally {
        clearTimeout(timer)
      }
    },
    close: () => transport.close()
  }
}

/**
 * Whether an smtp:// URL with a login must upgrade with STARTTLS before it logs in. Left to itself,
 * nodemailer upgrades only when the server offers STARTTLS, and otherwise sent the password in the
 * clear: to a relay set up without TLS, or past anyone between who struck STARTTLS from its answer.
 * The URL has the last word: `?requireTLS=false` (a relay on a trusted network) or `?ignoreTLS=true`.
 */
function loginNeedsTls(url: string): boolean {
  const { protocol, username, password, searchParams } = new URL(url)
  const login = username !== '' || password !== '' || searchParams.has('auth.user') || searchParams.has('auth.pass')
  return protocol === 'smtp:' && login && !searchParams.has('requireTLS') && searchParams.get('ignoreTLS') !== 'true'
}

/** A send's whole time, in SMTP timeouts (15 s each by default: a minute). */
const SEND_DEADLINES = 4

/** A send that took longer than its deadline in all (its connection kept talking, too slowly). */
class MailTimeoutError extends Error {
  readonly code = 'ETIMEDOUT'
  constructor(ms: number) {
    super(`the SMTP server took more than ${ms} ms for one mail; the connection was closed`)
  }
}

function fileMailer(dir: string, log: Pick<Logger, 'info'> | undefined): Mailer {
  const transport = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'unix' })
  return {
    async send(mail) {
      // Unix line ends drop a bare CR, where SMTP's turn it into a line break: "one\rtwo" read "onetwo".
      const info = await transport.sendMail({ ...mail, text: mail.text.replace(/\r\n?/g, '\n') })
      makeDirectory(dir)
      const name = `${new Date().toISOString().replace(/[:.]/g, '-')}-${mail.messageId.replace(/^<|@.*$/g, '').replace(/[^A-Za-z0-9-]/g, '')}.eml`
      const file = join(dir, name)
      // Written under a hidden name, then renamed: a mail client or a tool watching the directory
      // opened a file of 0 bytes or half a mail, and a write that failed midway left one behind.
      const partial = join(dir, `.${name}.partial`)
      try {
        await writeFile(partial, info.message as Buffer)
        await rename(partial, file)
      } catch (error) {
        await rm(partial, { force: true }).catch(() => undefined)
        throw error
      }
      log?.info({ file, to: mail.to, subject: mail.subject }, 'mail written to a file, as SMTP_URL is not set')
    },
    close: () => transport.close()
  }
}
