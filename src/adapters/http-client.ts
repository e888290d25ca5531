import dns from 'node:dns'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import got, { type Method } from 'got'

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
}

export function createHttpClient(options: HttpClientOptions): HttpClient {
  const allowPrivate = options.allowPrivateNetworks ?? false
  // The agents' lookup wins over any per-request one (Node merges agent options last), so every
  // connection is checked on the address it actually connects to: DNS rebinding cannot slip past.
  const lookup = allowPrivate ? undefined : guardedLookup
  const agentOptions = { keepAlive: true, maxSockets: options.maxSockets, ...(lookup ? { lookup } : {}) }
  const agent = { http: new http.Agent(agentOptions), https: new https.Agent(agentOptions) }
  return {
    async send(request) {
      target(request.url, allowPrivate)
      return call(request, options, agent)
    },
    close: () => {
      agent.http.destroy()
      agent.https.destroy()
    }
  }
}

/** Parses the URL and refuses what the client never calls; literal IP hosts are checked here, as no lookup runs for them. */
function target(text: string, allowPrivate: boolean): URL {
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
  if (!allowPrivate && net.isIP(host) !== 0) {
    const range = forbiddenRange(host)
    if (range) throw refused(host, range)
  }
  return url
}

function refused(address: string, range: string, hostname?: string): HttpCallError {
  const what = hostname === undefined ? `target address ${address} is` : `target ${hostname} resolves to ${address}, which is`
  return new HttpCallError(TARGET_REFUSED, `${what} ${range}`)
}

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void

/** dns.lookup that fails the connection when any address of the answer is forbidden. */
function guardedLookup(hostname: string, options: dns.LookupOptions, callback: LookupCallback): void {
  dns.lookup(hostname, { ...options, all: true }, (error, addresses) => {
    if (error) return callback(error, [])
    for (const { address } of addresses) {
      const range = forbiddenRange(address)
      if (range) return callback(refused(address, range, hostname), [])
    }
    if (options.all) return callback(null, addresses)
    const first = addresses[0]
    if (!first) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), [])
    callback(null, first.address, first.family)
  })
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
      if (chunk.length >= room) {
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

// ---- Address policy ----------------------------------------------------------------------------

interface Range {
  base: bigint
  bits: number
  /** What the address is, as it reads after "target address X is ...". */
  is: string
}

const PRIVATE = 'in a private network range'

const IPV4_RANGES: Range[] = [
  v4('169.254.169.254/32', 'a cloud metadata address'),
  v4('0.0.0.0/8', 'in the unspecified ("this network") range'),
  v4('10.0.0.0/8', PRIVATE),
  v4('100.64.0.0/10', 'in the carrier-grade NAT range'),
  v4('127.0.0.0/8', 'a loopback address'),
  v4('169.254.0.0/16', 'a link-local address'),
  v4('172.16.0.0/12', PRIVATE),
  v4('192.0.0.0/24', 'in a reserved range'),
  v4('192.168.0.0/16', PRIVATE),
  v4('198.18.0.0/15', 'in a reserved range'),
  v4('224.0.0.0/4', 'a multicast address'),
  v4('240.0.0.0/4', 'in a reserved range')
]

const IPV6_RANGES: Range[] = [
  v6('::/128', 'unspecified'),
  v6('::1/128', 'a loopback address'),
  v6('fd00:ec2::254/128', 'a cloud metadata address'),
  v6('64:ff9b:1::/48', PRIVATE),
  v6('fc00::/7', PRIVATE),
  v6('fe80::/10', 'a link-local address'),
  v6('fec0::/10', PRIVATE),
  v6('ff00::/8', 'a multicast address')
]

/** IPv6 ranges that carry an IPv4 address in their last 32 bits: judged by that address. */
const IPV4_CARRIERS: Range[] = [
  v6('::ffff:0:0/96', 'IPv4-mapped'),
  v6('::/96', 'IPv4-compatible'),
  v6('64:ff9b::/96', 'NAT64')
]

/**
 * Why the client refuses to call this IP address ("in a private network range", "a loopback address",
 * ...), or undefined when the address is public. Anything that does not parse as an IP is refused.
 */
export function forbiddenRange(address: string): string | undefined {
  const ip = address.replace(/^\[(.*)\]$/, '$1').replace(/%.*$/, '')
  if (net.isIPv4(ip)) return match(IPV4_RANGES, ipv4ToBigInt(ip), 32)
  if (!net.isIPv6(ip)) return 'not an IP address'
  const value = ipv6ToBigInt(ip)
  const direct = match(IPV6_RANGES, value, 128)
  if (direct) return direct
  if (match(IPV4_CARRIERS, value, 128)) return match(IPV4_RANGES, value & 0xffff_ffffn, 32)
  return undefined
}

function match(ranges: Range[], value: bigint, width: number): string | undefined {
  return ranges.find((range) => value >> BigInt(width - range.bits) === range.base >> BigInt(width - range.bits))?.is
}

function v4(cidr: string, is: string): Range {
  const [address = '', bits] = cidr.split('/')
  return { base: ipv4ToBigInt(address), bits: Number(bits), is }
}

function v6(cidr: string, is: string): Range {
  const [address = '', bits] = cidr.split('/')
  return { base: ipv6ToBigInt(address), bits: Number(bits), is }
}

function ipv4ToBigInt(address: string): bigint {
  return address.split('.').reduce((value, octet) => (value << 8n) | BigInt(Number(octet)), 0n)
}

/** A valid IPv6 address (net.isIPv6) as a 128-bit number; a dotted IPv4 tail is allowed. */
function ipv6ToBigInt(address: string): bigint {
  let text = address
  const tail = text.slice(text.lastIndexOf(':') + 1)
  if (tail.includes('.')) {
    const v4value = ipv4ToBigInt(tail)
    text = `${text.slice(0, text.length - tail.length)}${(v4value >> 16n).toString(16)}:${(v4value & 0xffffn).toString(16)}`
  }
  const [head = '', rest] = text.split('::')
  const headGroups = head ? head.split(':') : []
  const restGroups = rest ? rest.split(':') : []
  const groups = rest === undefined
    ? headGroups
    : [...headGroups, ...Array<string>(8 - headGroups.length - restGroups.length).fill('0'), ...restGroups]
  return groups.reduce((value, group) => (value << 16n) | BigInt(parseInt(group, 16)), 0n)
}
