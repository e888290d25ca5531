import dns from 'node:dns'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import tls from 'node:tls'
import type { Transform } from 'node:stream'
import zlib from 'node:zlib'
import { machineShortage, type MachineShortage } from '../lib/machine-shortage.js'
import { cutUtf8 } from '../lib/storable.js'
import { tlsRefusal } from '../lib/tls-refusals.js'
import { forbiddenRange, isAllowedAddress, isAllowedHost, NO_ALLOWED_TARGETS, type AllowedTargets } from './address-policy.js'

export interface HttpRequest {
  method: 'GET' | 'POST'
  url: string
  headers: Record<string, string>
  body?: string
  timeoutMs: number
  signal?: AbortSignal
  /**
   * A tenant's own target (a step's free target), not a marketplace provider's: the operator's
   * WEBHOOK_ALLOWED_TARGETS, set for providers, do not open private addresses to it, and a host name
   * of it that does not resolve reads as one resolving to a forbidden address (TARGET_NO_ADDRESS).
   */
  tenantTarget?: boolean
}

export interface HttpResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  /** The body, decoded as UTF-8, up to the client's cap. */
  body: string
  truncated: boolean
}

/** The code of a call the client refused to make: a scheme other than http(s), or a forbidden address. */
export const TARGET_REFUSED = 'ERR_TARGET_REFUSED'

/**
 * The code of a tenant's call whose host name gave no address Baton may call: it did not resolve, or
 * only to forbidden addresses. It is retried like a network error, as DNS may change.
 */
export const TARGET_NO_ADDRESS = 'ERR_TARGET_NO_ADDRESS'

/** A call that produced no HTTP response: refused, reset, timed out, aborted. */
export class HttpCallError extends Error {
  override name = 'HttpCallError'
  /**
   * `detail`: what only the operator's log may say (the address a host name resolved to, or why a
   * tenant's host name gave none), never the attempt log.
   */
  constructor(readonly code: string, message: string, readonly detail?: string) {
    super(message)
  }

  /** The client would not call this target at all; trying again cannot help. */
  get targetRefused(): boolean {
    return this.code === TARGET_REFUSED
  }
}

/**
 * This machine, not the target, was short of what a connection needs (machineShortage) while opening
 * one: the call never left it. It is the worker's own fault to wait out, not an attempt of the provider's.
 */
export class LocalShortageError extends HttpCallError {
  override name = 'LocalShortageError'
  /** What the machine was short of, in an operator's words. */
  readonly shortOf: string
  constructor(code: MachineShortage, message: string) {
    super(code, message)
    this.shortOf = LOCAL_SHORTAGE.get(code) ?? code
  }
}

/** What the machine was short of (src/lib/machine-shortage.ts), in a worker's log's words. */
const LOCAL_SHORTAGE = new Map<MachineShortage, string>([
  ['EMFILE', 'file descriptors (the worker reached its open-files limit, ulimit -n)'],
  ['ENFILE', 'file descriptors (the machine reached its system-wide open-files limit, fs.file-max)'],
  ['ENOBUFS', 'kernel buffer space for a socket'],
  ['ENOMEM', 'kernel memory for a socket']
])

export interface HttpClient {
  send(request: HttpRequest): Promise<HttpResponse>
  close(): void
}

export interface HttpClientOptions {
  /** Bytes of a response body kept (after decompression); the rest is dropped unread. */
  maxBodyBytes: number
  maxSockets: number
  userAgent: string
  /** Let calls reach loopback, private, link-local and metadata addresses (development and tests). Default false. */
  allowPrivateNetworks?: boolean
  /** Host names and address ranges that may be called even though they are private (see parseAllowedTargets). */
  allowedTargets?: AllowedTargets
  /** How long a kept-alive connection may sit unused before it is closed (IDLE_SOCKET_MS by default). */
  idleSocketMs?: number
  /**
   * Certificates of authorities trusted besides node's bundled roots (tls.rootCertificates; those of
   * NODE_EXTRA_CA_CERTS are then left out): the tests' own CA. Baton's configuration sets none; an
   * operator trusts a private CA with NODE_EXTRA_CA_CERTS (README). Nothing here turns verification off.
   */
  ca?: (string | Buffer)[]
}

/**
 * A kept-alive connection unused this long is closed. Without a limit, one stayed open until its server
 * closed it, and some never do (Go's net/http without an IdleTimeout; a server that sends no Keep-Alive
 * hint): a worker kept one connection or more for each such host it had ever called, tenants' free
 * targets among them. Node closes one sooner when its server's hint says so (a second before it).
 */
const IDLE_SOCKET_MS = 30_000

export function createHttpClient(options: HttpClientOptions): HttpClient {
  const allowPrivate = options.allowPrivateNetworks ?? false
  const allowed = options.allowedTargets ?? NO_ALLOWED_TARGETS
  // The agents' lookup wins over any per-request one (Node merges agent options last), so every
  // connection is checked on the address it actually connects to: DNS rebinding cannot slip past.
  const agents = (targets: AllowedTargets): Agents => {
    const lookup = allowPrivate ? undefined : guardedLookup(targets)
    const agentOptions = {
      keepAlive: true, maxSockets: options.maxSockets, timeout: options.idleSocketMs ?? IDLE_SOCKET_MS,
      ...(lookup ? { lookup } : {}), ...(options.ca ? { ca: [...tls.rootCertificates, ...options.ca] } : {})
    }
    // The same options, lookup guard included, but no pool: a call sent again after a stale kept-alive
    // connection failed it gets a connection of its own, never another pooled one that may be as stale.
    const freshOptions = { ...agentOptions, keepAlive: false }
    return {
      http: new http.Agent(agentOptions), https: new https.Agent(agentOptions),
      fresh: { http: new http.Agent(freshOptions), https: new https.Agent(freshOptions) }
    }
  }
  const agent = agents(allowed)
  // Tenants' targets keep connections of their own when the operator allowed some private targets: a
  // kept-alive socket to an allowed provider is never lent to a tenant's call to the same host name.
  const none = allowed.hosts.size === 0 && allowed.v4.length === 0 && allowed.v6.length === 0
  const tenantAgent = allowPrivate || none ? agent : agents(NO_ALLOWED_TARGETS)
  return {
    async send(request) {
      const tenant = request.tenantTarget === true
      const url = checkTarget(request.url, allowPrivate ? undefined : tenant ? NO_ALLOWED_TARGETS : allowed)
      return call(request, url, options, tenant ? tenantAgent : agent)
    },
    close: () => {
      for (const each of new Set([agent, tenantAgent])) {
        for (const one of [each, each.fresh]) {
          one.http.destroy()
          one.https.destroy()
        }
      }
    }
  }
}

/**
 * Parses the URL and refuses what the client never calls; literal IP hosts are checked here, as no
 * lookup runs for them. `allowed` is undefined when private networks are allowed altogether.
 */
function checkTarget(text: string, allowed: AllowedTargets | undefined): URL {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new HttpCallError(TARGET_REFUSED, 'the target URL is not valid')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new HttpCallError(TARGET_REFUSED, `scheme ${url.protocol.slice(0, -1)} is not allowed; only http and https`)
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
  if (allowed && net.isIP(host) !== 0 && !isAllowedAddress(allowed, host)) {
    const range = forbiddenRange(host)
    if (range) throw refused(host, range)
  }
  return url
}

/**
 * A literal address is the caller's own and is named; what a host name resolved to is not, or the
 * attempt log would answer a tenant's questions about Baton's network (a DNS oracle). A marketplace
 * service's host name, which only the operator sets, is still said to resolve to a forbidden address:
 * no tenant can probe with it, and its operator learns what to fix.
 */
function refused(address: string, range: string, hostname?: string): HttpCallError {
  if (hostname === undefined) return new HttpCallError(TARGET_REFUSED, `target address ${address} is ${range}`)
  return new HttpCallError(TARGET_REFUSED, `target ${hostname} resolves to a private or reserved address`, `${address}, which is ${range}`)
}

/**
 * A tenant's host name that does not resolve and one that resolves only to forbidden addresses read
 * alike, and are alike retried: told apart, they would map which names exist inside Baton's network.
 * The real reason stays in `detail`. Undefined for any other error, which is passed on as it is.
 */
function noAddress(error: NodeJS.ErrnoException, hostname: string): HttpCallError | undefined {
  // A refusal carries a detail only when a host name's lookup led to it (a literal address needs none).
  const refusedName = error instanceof HttpCallError && error.targetRefused && error.detail !== undefined
  if (!refusedName && error.syscall !== 'getaddrinfo') return undefined
  const detail = refusedName ? (error as HttpCallError).detail : `no address (${error.message})`
  return new HttpCallError(TARGET_NO_ADDRESS,
    `target host ${hostname} has no address Baton may call (it does not resolve, or only to private or reserved addresses)`, detail)
}

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void

/** dns.lookup that fails the connection when any address of the answer is forbidden and not allowed. */
function guardedLookup(allowed: AllowedTargets) {
  return (hostname: string, options: dns.LookupOptions, callback: LookupCallback): void => {
    if (isAllowedHost(allowed, hostname)) return dns.lookup(hostname, options, callback as never)
    dns.lookup(hostname, { ...options, all: true }, (error, addresses) => answer(hostname, options, callback, allowed, error, addresses))
  }
}

/** Passes the answer on when none of its addresses is forbidden (or each is allowed); otherwise fails the connection. */
function answer(
  hostname: string, options: dns.LookupOptions, callback: LookupCallback, allowed: AllowedTargets,
  error: NodeJS.ErrnoException | null, addresses: dns.LookupAddress[]
): void {
  if (error) return callback(error, [])
  for (const { address } of addresses) {
    const range = isAllowedAddress(allowed, address) ? undefined : forbiddenRange(address)
    if (range) return callback(refused(address, range, hostname), [])
  }
  if (options.all) return callback(null, addresses)
  const first = addresses[0]
  if (!first) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND', syscall: 'getaddrinfo', hostname }), [])
  callback(null, first.address, first.family)
}

/**
 * A failed https call in words an operator reads in the attempt log: a refused certificate names the
 * host and says nothing was sent (the check ends the handshake, before the request); a handshake that
 * broke gives OpenSSL's reason without its internals (node's message carried a thread's address, a
 * source file and a newline). Undefined for any other error, whose message stands.
 */
function tlsFailure(error: Error, hostname: string): string | undefined {
  const refusal = tlsRefusal(error)
  const refused = `the TLS certificate of ${hostname} was refused, nothing was sent`
  switch (refusal?.kind) {
    case undefined: return undefined
    case 'otherName': return `${refused}: it is not for that name (${refusal.said})`
    case 'untrusted': return `${refused}: ${refusal.said} (not issued by a certificate authority this worker trusts)`
    case 'refused': return `${refused}: ${refusal.said}`
    case 'handshake': return `the TLS handshake with ${hostname} failed: ${refusal.said}${refusal.said === 'wrong version number' ? ' (the port may serve plain http, not https)' : ''}`
  }
}

/** A body cut at the cap ends with no half of a character. */
const text = (body: Buffer, truncated: boolean) => (truncated ? cutUtf8(body) : body.toString('utf8'))

type AgentPair = { http: http.Agent; https: https.Agent }
type Agents = AgentPair & { fresh: AgentPair }

/**
 * Errors of a kept-alive connection that the server closed as the request went out on it (node's
 * server drops idle ones after keepAliveTimeout, 5 s): node gives ECONNRESET ("socket hang up" or
 * "read ECONNRESET"), EPIPE if it was still writing, ECONNABORTED on some systems.
 */
const STALE_CONNECTION = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED'])

/**
 * How soon after the request went out such an error counts as that race: the server's reset comes a
 * round trip after the request. Later, the provider may have read the request and be working on it when
 * the connection went (a crash, a proxy): that is a network error like any other, logged and retried
 * after its backoff, not sent again unseen.
 */
const STALE_WINDOW_MS = 500

const LENIENT = { finishFlush: zlib.constants.Z_SYNC_FLUSH }

/**
 * Decoders for the encodings the client asks for, made on the body's first chunk (so an empty body
 * under an encoding header is simply empty); a body in any other encoding is kept as it came.
 */
const DECODERS = new Map<string, (first: Buffer) => Transform>([
  ['gzip', () => zlib.createGunzip(LENIENT)],
  ['x-gzip', () => zlib.createGunzip(LENIENT)],
  // "deflate" means zlib-wrapped, but some servers send it raw, as browsers accept: the first byte tells.
  ['deflate', (first) => ((first[0]! & 0x0f) === 0x08 ? zlib.createInflate(LENIENT) : zlib.createInflateRaw(LENIENT))],
  ['br', () => zlib.createBrotliDecompress({ finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH })]
])
const ACCEPT_ENCODING = 'gzip, deflate, br'

/**
 * One call with node's own client: no redirects followed, no retries but the one resend below, one
 * timer for the whole call (connections, response and body, the resend included), the body kept up
 * to the cap after decompression.
 */
function call(request: HttpRequest, url: URL, options: HttpClientOptions, agents: Agents): Promise<HttpResponse> {
  if (request.signal?.aborted) return Promise.reject(new HttpCallError('ERR_ABORTED', 'the call was aborted'))
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = { 'user-agent': options.userAgent, 'accept-encoding': ACCEPT_ENCODING, ...request.headers }
    if (request.body !== undefined) headers['content-length'] = Buffer.byteLength(request.body)
    const secure = url.protocol === 'https:'
    let req: http.ClientRequest | undefined
    const chunks: Buffer[] = []
    let size = 0
    let settled = false
    let resent = false
    let response: http.IncomingMessage | undefined
    let decoder: Transform | undefined
    const settle = () => {
      settled = true
      clearTimeout(timer)
      request.signal?.removeEventListener('abort', onAbort)
    }
    const fail = (...why: [code: string, message: string, detail?: string] | [HttpCallError]) => {
      if (settled) return
      settle()
      req?.destroy()
      response?.destroy()
      decoder?.destroy()
      reject(why.length === 1 ? why[0] : new HttpCallError(...why))
    }
    const finish = (truncated: boolean) => {
      if (settled || !response || !req) return
      settle()
      // Cut off, or answered before its own body went out: the connection is not fit to be reused.
      if (truncated || !req.writableFinished) {
        req.destroy()
        response.destroy()
        decoder?.destroy()
      }
      resolve({ status: response.statusCode ?? 0, headers: response.headers, body: text(Buffer.concat(chunks), truncated), truncated })
    }
    const take = (chunk: Buffer) => {
      const room = options.maxBodyBytes - size
      if (room > 0) chunks.push(chunk.subarray(0, room))
      size += Math.min(room, chunk.length)
      // A chunk that just fills the cap may be the last: only one past it proves the body was cut.
      if (chunk.length > room) finish(true)
    }
    const onAbort = () => fail('ERR_ABORTED', 'the call was aborted')
    const timer = setTimeout(() => fail('ETIMEDOUT', `no response within ${request.timeoutMs} ms`), request.timeoutMs)
    request.signal?.addEventListener('abort', onAbort, { once: true })
    /**
     * A kept-alive connection the server closed just as this request went out on it (STALE_WINDOW_MS)
     * failed the call before the server read it, so it is sent again at once, once, as node's docs advise
     * (request.reusedSocket), on a connection of its own. One the call opened itself fails as it did;
     * so does one that began to answer, one cut off by the timer or the caller, and the resend.
     */
    const stale = (sent: http.ClientRequest, sentAt: number, error: NodeJS.ErrnoException) =>
      !settled && !resent && sent.reusedSocket && response === undefined && STALE_CONNECTION.has(error.code ?? '')
      && performance.now() - sentAt <= STALE_WINDOW_MS
    const send = (pool: AgentPair) => {
      // A forward-only timer: on the wall clock, a step back while the provider worked had the request sent again.
      const sentAt = performance.now()
      let sent: http.ClientRequest
      try {
        sent = (secure ? https : http).request(url, { method: request.method, headers, agent: secure ? pool.https : pool.http })
      } catch (error) {
        const { code, message } = error as NodeJS.ErrnoException
        return fail(code ?? 'ERR_HTTP', message)
      }
      req = sent
      // Listening first: destroying the request makes it emit an error.
      sent.on('error', (error: NodeJS.ErrnoException) => {
        // A response read to its declared end stands: bytes after it (a Content-Length counted in
        // characters, not bytes) fail node's parser as a next response, and the socket is dropped, not reused.
        if (sent !== req || response?.complete) return
        if (stale(sent, sentAt, error)) {
          resent = true
          return send(agents.fresh)
        }
        // Before a tenant's lookup is hidden: a lookup that failed for want of file descriptors is no answer about the name.
        const shortage = machineShortage(error)
        if (shortage) return fail(new LocalShortageError(shortage, error.message))
        const hidden = request.tenantTarget === true ? noAddress(error, url.hostname) : undefined
        if (hidden) return fail(hidden.code, hidden.message, hidden.detail)
        const message = (secure ? tlsFailure(error, url.hostname) : undefined) ?? error.message
        fail(error.code ?? 'ERR_HTTP', message, error instanceof HttpCallError ? error.detail : undefined)
      })
      // A 101 that switches protocols: node hands the socket only to an 'upgrade' listener and otherwise
      // drops it without a word, which would leave the call to its timeout. It is a status like any other.
      sent.on('upgrade', (res: http.IncomingMessage, socket: net.Socket) => {
        socket.destroy()
        response = res
        finish(false)
      })
      sent.on('response', (res: http.IncomingMessage) => {
        response = res
        const makeDecoder = DECODERS.get(String(res.headers['content-encoding'] ?? '').trim().toLowerCase())
        res.on('data', (chunk: Buffer) => {
          if (settled) return
          if (!decoder && makeDecoder) {
            decoder = makeDecoder(chunk)
            decoder.on('data', take)
            decoder.on('end', () => finish(false))
            decoder.on('drain', () => res.resume())
            decoder.on('error', (error: NodeJS.ErrnoException) => fail(error.code ?? 'ERR_HTTP', `the body could not be decoded: ${error.message}`))
          }
          if (!decoder) take(chunk)
          else if (!decoder.write(chunk)) res.pause()
        })
        res.on('end', () => (decoder ? decoder.end() : finish(false)))
        res.on('error', (error: NodeJS.ErrnoException) => fail(error.code ?? 'ERR_HTTP', error.message))
        res.on('close', () => {
          if (!res.complete) fail('ECONNRESET', 'the connection closed before the response ended')
        })
      })
      sent.end(request.body)
    }
    send(agents)
  })
}
