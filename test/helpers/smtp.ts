import type { AddressInfo } from 'node:net'
import { SMTPServer, type SMTPServerOptions } from 'smtp-server'

export interface ReceivedMail {
  to: string[]
  raw: string
  subject: string
  /** The plain-text body, decoded. */
  text: string
  messageId: string
}

/** Header lines unfolded and their encoded words (RFC 2047) decoded. */
function header(raw: string, name: string): string {
  const head = raw.split(/\r?\n\r?\n/)[0]!.replace(/\r?\n[ \t]+/g, ' ')
  const value = new RegExp(`^${name}: (.*)$`, 'im').exec(head)?.[1] ?? ''
  return value.replace(/=\?UTF-8\?([QB])\?([^?]*)\?=\s*/gi, (_m, encoding: string, text: string) => encoding.toUpperCase() === 'B'
    ? Buffer.from(text, 'base64').toString()
    : Buffer.from(text.replace(/_/g, ' ').replace(/=([0-9A-F]{2})/gi, (_h, hex: string) => String.fromCharCode(parseInt(hex, 16))), 'latin1').toString())
}

function body(raw: string): string {
  const [, ...rest] = raw.split(/\r?\n\r?\n/)
  const text = rest.join('\n\n')
  const encoding = header(raw, 'Content-Transfer-Encoding').toLowerCase()
  if (encoding === 'base64') return Buffer.from(text, 'base64').toString()
  if (encoding !== 'quoted-printable') return text
  const bytes = text.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/gi, (_h, hex: string) => String.fromCharCode(parseInt(hex, 16)))
  return Buffer.from(bytes, 'latin1').toString()
}

/** A real SMTP server on 127.0.0.1 that keeps what it receives; it can be told to refuse mail. */
export class TestSmtpServer {
  readonly mails: ReceivedMail[] = []
  refusing = false
  /** Recipients refused for good (550, no such mailbox), as a real server refuses an unknown one. */
  readonly refusedRecipients = new Set<string>()
  /** What the server says when it refuses one of them. */
  refusalText = 'No such mailbox'
  /** Every sender refused for good (530, authentication required), as a server Baton is not set up for refuses it. */
  refusingSenders = false
  /** Runs once a mail has arrived, before the server answers its final dot (a test breaks something in between). */
  beforeAnswer: (() => Promise<void>) | undefined
  url = ''
  private server: SMTPServer

  /** `options` adds to the server's own, e.g. `maxClients` for a server that takes that many connections at once. */
  private constructor(options: SMTPServerOptions = {}) {
    this.server = this.create(options)
  }

  private create(options: SMTPServerOptions): SMTPServer {
    return new SMTPServer({
      ...options,
      authOptional: true,
      disabledCommands: ['STARTTLS', 'AUTH'],
      logger: false,
      onMailFrom: (_address, _session, callback) => {
        if (this.refusingSenders) callback(Object.assign(new Error('Authentication required'), { responseCode: 530 }))
        else callback()
      },
      onRcptTo: (address, _session, callback) => {
        if (this.refusedRecipients.has(address.address)) callback(Object.assign(new Error(this.refusalText), { responseCode: 550 }))
        else if (this.refusing) callback(Object.assign(new Error('Mailbox unavailable, try later'), { responseCode: 451 }))
        else callback()
      },
      onData: (stream, session, callback) => {
        // Decoded whole: a character split between two chunks would read as two U+FFFD.
        const chunks: Buffer[] = []
        stream.on('data', (chunk: Buffer) => chunks.push(chunk))
        stream.on('end', async () => {
          const raw = Buffer.concat(chunks).toString()
          await this.beforeAnswer?.()
          this.mails.push({
            to: session.envelope.rcptTo.map((r) => r.address),
            raw,
            subject: header(raw, 'Subject'),
            text: body(raw),
            messageId: header(raw, 'Message-ID')
          })
          callback()
        })
      }
    })
  }

  static async start(options: SMTPServerOptions = {}): Promise<TestSmtpServer> {
    const smtp = new TestSmtpServer(options)
    // A client that dies mid-conversation (a killed worker) resets its connection: not our failure.
    smtp.server.on('error', () => {})
    await new Promise<void>((resolve) => smtp.server.listen(0, '127.0.0.1', () => resolve()))
    smtp.url = `smtp://127.0.0.1:${(smtp.server.server.address() as AddressInfo).port}`
    return smtp
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}
