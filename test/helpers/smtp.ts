import type { AddressInfo } from 'node:net'
import { SMTPServer } from 'smtp-server'

export interface ReceivedMail {
  to: string[]
  raw: string
  subject: string
  messageId: string
}

/** A real SMTP server on 127.0.0.1 that keeps what it receives; it can be told to refuse mail. */
export class TestSmtpServer {
  readonly mails: ReceivedMail[] = []
  refusing = false
  url = ''
  private server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onRcptTo: (_address, _session, callback) => {
      if (this.refusing) callback(Object.assign(new Error('Mailbox unavailable, try later'), { responseCode: 451 }))
      else callback()
    },
    onData: (stream, session, callback) => {
      let raw = ''
      stream.on('data', (chunk: Buffer) => (raw += chunk.toString()))
      stream.on('end', () => {
        this.mails.push({
          to: session.envelope.rcptTo.map((r) => r.address),
          raw,
          subject: /^Subject: (.*)$/m.exec(raw)?.[1] ?? '',
          messageId: /^Message-ID: (.*)$/im.exec(raw)?.[1] ?? ''
        })
        callback()
      })
    }
  })

  static async start(): Promise<TestSmtpServer> {
    const smtp = new TestSmtpServer()
    await new Promise<void>((resolve) => smtp.server.listen(0, '127.0.0.1', () => resolve()))
    smtp.url = `smtp://127.0.0.1:${(smtp.server.server.address() as AddressInfo).port}`
    return smtp
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}
