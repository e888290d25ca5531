import type { AddressInfo } from 'node:net'
import { SMTPServer, type SMTPServerOptions } from 'smtp-server'

/** A server speaking TLS with this key and certificate (PEM): from the start (smtps), or after STARTTLS. */
export interface SmtpTls {
  key: string | Buffer
  cert: string | Buffer
  implicit: boolean
}

export interface ReceivedMail {
  to: string[]
  raw: string
  subject: string
  /** The plain-text body, decoded. */
  text: string
  messageId: string
  /** Whether the mail came over TLS. */
  secure: boolean
  /** The user the client logged in as, if it did. */
  user: string | undefined
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
  /** With `login`: the password it takes now (a test changes it, as an operator changes the relay's). */
  password = ''
  /** What each login tried, as the server read it: the method (PLAIN, LOGIN), the user and the password, decoded. */
  readonly logins: { method: string; username: string; password: string }[] = []
  private server: SMTPServer

  /**
   * `options` adds to the server's own, e.g. `maxClients` for a server that takes that many connections at once.
   * With `tls`, it speaks TLS as a real relay does (implicit on its port, or after STARTTLS); with `login`, it
   * takes mail only from that user with that password (535 otherwise), and only over TLS.
   */
  private constructor(options: SMTPServerOptions = {}, private readonly secured: { tls?: SmtpTls; login?: { user: string; password: string } } = {}) {
    if (secured.login) this.password = secured.login.password
    this.server = this.create(options)
  }

  private create(options: SMTPServerOptions): SMTPServer {
    const { tls, login } = this.secured
    return new SMTPServer({
      ...options,
      ...(tls ? { key: tls.key, cert: tls.cert, secure: tls.implicit } : {}),
      authOptional: !login,
      disabledCommands: [...(tls && !tls.implicit ? [] : ['STARTTLS']), ...(login ? [] : ['AUTH'])],
      ...(login ? {
        onAuth: (auth, _session, callback) => {
          this.logins.push({ method: auth.method, username: auth.username ?? '', password: auth.password ?? '' })
          if (auth.username === login.user && auth.password === this.password) callback(null, { user: auth.username })
          else callback(Object.assign(new Error('Authentication credentials invalid'), { responseCode: 535 }))
        }
      } : {}),
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
            messageId: header(raw, 'Message-ID'),
            secure: session.secure,
            user: typeof session.user === 'string' ? session.user : undefined
          })
          callback()
        })
      }
    })
  }

  static async start(options: SMTPServerOptions = {}, secured: { tls?: SmtpTls; login?: { user: string; password: string } } = {}): Promise<TestSmtpServer> {
    const smtp = new TestSmtpServer(options, secured)
    // A client that dies mid-conversation (a killed worker) resets its connection: not our failure.
    smtp.server.on('error', () => {})
    await new Promise<void>((resolve) => smtp.server.listen(0, '127.0.0.1', () => resolve()))
    const port = (smtp.server.server.address() as AddressInfo).port
    // A TLS server is named as its certificate names it; the credentials go in percent-encoded, as the README says.
    const login = secured.login ? `${encodeURIComponent(secured.login.user)}:${encodeURIComponent(secured.login.password)}@` : ''
    smtp.url = secured.tls ? `${secured.tls.implicit ? 'smtps' : 'smtp'}://${login}localhost:${port}` : `smtp://${login}127.0.0.1:${port}`
    return smtp
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}
