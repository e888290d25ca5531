import dns from 'node:dns'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import got, { type Method } from 'got'
import { forbiddenRange, isAllowedAddress, isAllowedHost, NO_ALLOWED_TARGETS, type AllowedTargets } from './address-policy.js'

export interface HttpRequest {
  method: 'GET' | 'POST'
  url: string
  headers: Record<string, string>
  body?: string
  timeoutMs: number
  signal?: AbortSignal
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

/** A call that produced no HTTP response: refused, reset, timed out, aborted. */
export class HttpCallError extends Error {
  override name = 'HttpCallError'
  constructor(readonly code: string, message: string) {
    super(message)
  }

  /** The client would not call this target at all; trying again cannot help. */
  get targetRefused(): boolean {
    return this.code === TARGET_REFUSED
  }
}

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
}

export function createHttpClient(options: HttpClientOptions): HttpClient {
  const allowPrivate = options.allowPrivateNetworks ?? false
  const allowed = options.allowedTargets ?? NO_ALLOWED_TARGETS
  // The agents' lookup wins over any per-request one (Node merges agent options last), so every
  // connection is checked on the address it actually connects to: DNS rebinding cannot slip past.
  const lookup = allowPrivate ? undefined : guardedLookup(allowed)
  const agentOptions = { keepAlive: true, maxSockets: options.maxSockets, ...(lookup ? { lookup } : {}) }
  const agent = { http: new http.Agent(agentOptions), https: new https.Agent(agentOptions) }
  return {
    async send(request) {
      checkTarget(request.url, allowPrivate ? undefined : allowed)
      return call(request, options, agent)
    },
    close: () => {
      agent.http.destroy()
      agent.https.destroy()
    }
  }
}

/**
 * Parses the URL and refuses what the client never calls; literal IP hosts are checked here, as no
 * lookup runs for them. `allowed` is undefined when private networks are allowed altogether.
 */
function checkTarget(text: string, allowed: AllowedTargets | undefined): void {
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
}

function refused(address: string, range: string, hostname?: string): HttpCallError {
  const what = hostname === undefined ? `target address ${address} is` : `target ${hostname} resolves to ${address}, which is`
  return new HttpCallError(TARGET_REFUSED, `${what} ${range}`)
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
  if (!first) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), [])
  callback(null, first.address, first.family)
}

function call(
  request: HttpRequest,
  options: HttpClientOptions,
  agent: { http: http.Agent; https: https.Agent }
): Promise<HttpResponse> {
  const stream = got.stream(request.url, {
    method: request.method as Method,
    headers: { 'user-agent': options.userAgent, ...request.headers },
    ...(request.body === undefined ? {} : { body: request.body }),
    agent,
    followRedirect: false,
    throwHttpErrors: false,
    retry: { limit: 0 },
    timeout: { request: request.timeoutMs },
    ...(request.signal ? { signal: request.signal } : {})
  })
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    let status = 0
    let headers: HttpResponse['headers'] = {}
    let settled = false
    const finish = (truncated: boolean) => {
      if (settled) return
      settled = true
      resolve({ status, headers, body: Buffer.concat(chunks).toString('utf8'), truncated })
    }
    stream.on('response', (response: http.IncomingMessage) => {
      status = response.statusCode ?? 0
      headers = response.headers
    })
    stream.on('data', (chunk: Buffer) => {
      const room = options.maxBodyBytes - size
      if (room > 0) chunks.push(chunk.subarray(0, room))
      size += Math.min(room, chunk.length)
      // A chunk that just fills the cap may be the last: only one past it proves the body was cut.
      if (chunk.length > room) {
        finish(true)
        stream.destroy()
      }
    })
    stream.on('end', () => finish(false))
    stream.on('error', (error: Error & { code?: string }) => {
      if (settled) return
      settled = true
      reject(new HttpCallError(error.code ?? 'ERR_HTTP', describe(error, request.timeoutMs)))
    })
  })
}

function describe(error: Error & { code?: string }, timeoutMs: number): string {
  if (error.code === 'ETIMEDOUT') return `no response within ${timeoutMs} ms`
  if (error.name === 'AbortError' || error.code === 'ERR_ABORTED') return 'the call was aborted'
  return error.message
}
