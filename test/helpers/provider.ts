import http from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { Webhook } from 'standardwebhooks'
import { verifyQuerySignature } from '../../src/scheduler/signature.js'

export interface ReceivedCall {
  method: string
  url: string
  query: Record<string, string>
  headers: http.IncomingHttpHeaders
  body: string
  /** Whether the signature checked out with the provider's secret: onOffice's for a GET, Standard Webhooks' for a json POST. */
  signatureValid: boolean
  at: number
}

export interface Reply {
  status: number
  headers?: Record<string, string>
  /** Text is sent as UTF-8; bytes as they are. */
  body?: string | Buffer
  /** Wait this long before answering. */
  delayMs?: number
}

type Responder = (call: ReceivedCall) => Reply | Promise<Reply>

/** A real marketplace provider on 127.0.0.1: records every call and verifies it as a provider would. */
export class TestProvider {
  readonly calls: ReceivedCall[] = []
  private server: http.Server
  private responders: Responder[] = []
  private fallback: Responder = () => ({ status: 200, body: 'ok' })
  secret = ''
  url = ''

  /** With `tls` (a key and its certificate), the provider is an https server. */
  private constructor(tls?: { key: Buffer; cert: Buffer }) {
    const handler: http.RequestListener = (req, res) => void this.handle(req, res)
    this.server = tls ? https.createServer({ ...tls }, handler) : http.createServer(handler)
  }

  static async start(secret = '', options: { tls?: { key: Buffer; cert: Buffer } } = {}): Promise<TestProvider> {
    const provider = new TestProvider(options.tls)
    provider.secret = secret
    await new Promise<void>((resolve) => provider.server.listen(0, '127.0.0.1', resolve))
    provider.url = `${options.tls ? 'https' : 'http'}://127.0.0.1:${(provider.server.address() as AddressInfo).port}`
    return provider
  }

  /** The next calls get these answers, in order; then the fallback. */
  queue(...replies: (Reply | Responder)[]): void {
    this.responders.push(...replies.map((r) => (typeof r === 'function' ? r : () => r)))
  }

  always(reply: Reply | Responder): void {
    this.fallback = typeof reply === 'function' ? reply : () => reply
  }

  async close(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let body = ''
    for await (const chunk of req) body += chunk
    const fullUrl = `${this.url}${req.url ?? '/'}`
    const call: ReceivedCall = {
      method: req.method ?? 'GET',
      url: fullUrl,
      query: Object.fromEntries(new URL(fullUrl).searchParams),
      headers: req.headers,
      body,
      signatureValid: this.secret !== '' && (req.headers['webhook-signature'] === undefined
        ? verifyQuerySignature(fullUrl, this.secret)
        : verifyStandardWebhook(this.secret, req.headers, body)),
      at: Date.now()
    }
    this.calls.push(call)
    const reply = await (this.responders.shift() ?? this.fallback)(call)
    if (reply.delayMs) await new Promise((resolve) => setTimeout(resolve, reply.delayMs))
    if (res.destroyed) return
    res.writeHead(reply.status, reply.headers)
    res.end(reply.body ?? '')
  }
}

/**
 * A Standard Webhooks check with the reference library's own signing, as a provider would make it;
 * the time window is left out, since tests move a clock of their own.
 */
function verifyStandardWebhook(secret: string, headers: http.IncomingHttpHeaders, body: string): boolean {
  const webhook = secret.startsWith('whsec_') ? new Webhook(secret) : new Webhook(Buffer.from(secret, 'utf8'), { format: 'raw' })
  const [id, timestamp, signatures] = ['webhook-id', 'webhook-timestamp', 'webhook-signature'].map((name) => String(headers[name] ?? ''))
  if (!id || !/^\d+$/.test(timestamp ?? '')) return false
  const expected = webhook.sign(id, new Date(Number(timestamp) * 1000), body)
  return (signatures ?? '').split(' ').includes(expected)
}

export const TEN_MIB = 10 * 1024 * 1024

/** Streams a body of `bytes` from one reused 64 KiB buffer, so the server itself holds no more than that. */
export function streamLargeBody(res: http.ServerResponse, bytes = TEN_MIB): void {
  const block = Buffer.alloc(65_536, 'x')
  let sent = 0
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(bytes) })
  const pump = () => {
    while (sent < bytes && !res.destroyed) {
      sent += block.length
      if (!res.write(block)) return res.once('drain', pump)
    }
    if (!res.destroyed) res.end()
  }
  pump()
}
