import type { IncomingHttpHeaders, IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { ProblemError } from '../errors.js'
import { REQUEST_ID_HEADER, requestIdFrom } from '../lib/request-id.js'
import { allowedMethods, hasEmptyParam, problemBody, sendProblem } from './problems.js'

/*
 * Errors that happen before a route runs, answered as application/problem+json like every other:
 * what Node's HTTP parser refuses (clientErrorHandler), what Fastify's router refuses (frameworkErrors),
 * an Expect header Node cannot meet, a request without Host (or with two, or a malformed one), a compressed body, and the checks of a request line that no route needs to see.
 */

/** Fastify's own bodyLimit when none is given (1 MiB). */
const DEFAULT_BODY_LIMIT = 1024 * 1024

/** Longer URLs answer 414; a page of ids and filters fits with room to spare. */
const MAX_URL_LENGTH = 8192

/** Fastify's `frameworkErrors`: a URL that does not decode or is no path (400), a path segment past maxParamLength (414). */
export function frameworkErrors(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const path = (request.raw.url ?? '/').split('?')[0]
  const [status, detail] = error.code === 'FST_ERR_BAD_URL'
    ? [400, badUrl(path ?? '')]
    : error.code === 'FST_ERR_MAX_PARAM_LENGTH'
      ? [414, 'A segment of the path is longer than 100 characters; no id of this API is that long.']
      : [500, 'Something went wrong on our side; it has been logged.']
  if (status === 500) request.log.error({ err: error }, 'router failed')
  void sendProblem(reply, problemBody(status, detail, path))
}

/** Why the router could not read a request target: it is no path nor http(s) URL, an escape is not two hex digits, or escapes spell no UTF-8. */
function badUrl(target: string): string {
  if (!/^(\/|https?:\/\/)/i.test(target)) return 'The URL is not valid: the request names a path, such as /v1/users, or an http or https URL.'
  return /%(?![0-9a-f]{2})/i.test(target) ? 'The URL is not valid: a "%" must start an escape of two hex digits, such as %2F.'
    : 'The URL is not valid: its escapes do not spell UTF-8 text, as %C3%BC spells "ü".'
}

type ParserError = Error & { code?: string }

/**
 * Fastify's `clientErrorHandler`: a request Node's HTTP parser refused (400), headers past 16 KiB (431),
 * chunk extensions past 16 KiB (413), or one that did not arrive in full within the request timeout (408),
 * written straight to the socket: the statuses Node's own bare answers have.
 */
export function clientErrorHandler(requestTimeoutMs: number) {
  return function onClientError(this: FastifyInstance, error: ParserError, socket: Socket): void {
    answerClientError(error, socket, requestTimeoutMs, (status, requestId) => this.log.debug({ code: error.code, status, requestId }, 'client error'))
  }
}

/**
 * Answers a request Node's HTTP parser refused with a problem and closes the connection; also the
 * worker's listener's 'clientError' listener, which without one sent Node's bare 400 or 431.
 */
export function answerClientError(error: ParserError, socket: Socket, requestTimeoutMs: number, log: (status: number, requestId: string) => void = () => {}): void {
  // A reset or closed connection has no one left to answer.
  if (error.code === 'ECONNRESET' || socket.destroyed) return
  const [status, detail] = clientErrorProblem(error, requestTimeoutMs)
  // Node could not read the request's headers: the answer names a request id of its own.
  const requestId = requestIdFrom(undefined)
  log(status, requestId)
  const response = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage
  if (socket.writable && !response?.headersSent) socket.write(rawProblem(status, detail, requestId))
  socket.destroy()
}

/** A whole HTTP/1.1 answer carrying a problem, for a socket that Node no longer answers for us. */
function rawProblem(status: number, detail: string, requestId: string, headers: Record<string, string> = {}, instance?: string): string {
  const body = JSON.stringify({ ...problemBody(status, detail, instance), requestId })
  const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('')
  return `HTTP/1.1 ${status} ${problemBody(status, '').title}\r\nConnection: close\r\n` +
    `Content-Type: application/problem+json\r\nCache-Control: no-store\r\nX-Request-Id: ${requestId}\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
}

/**
 * A 'connect' listener. Node hands a CONNECT to such listeners and, with none, closes the connection
 * without an answer. Baton is no proxy: 405, whose Allow names what the path takes (nothing for a
 * host:port), then the connection closes. `allowed` gives the methods of a path.
 */
export function refuseConnect(allowed: (path: string) => string[]) {
  return (request: IncomingMessage, socket: Duplex): void => {
    // Node took its own listeners off the socket: a reset must not become an uncaught error.
    socket.on('error', () => socket.destroy())
    const target = request.url ?? ''
    const path = target.startsWith('/') ? target.split('?')[0] : undefined
    const allow = path === undefined ? [] : allowed(path)
    const detail = `CONNECT is not supported: Baton is not a proxy${allow.length > 0 ? `; ${path} takes ${allow.join(', ')}` : ''}.`
    const requestId = requestIdFrom(request.headers[REQUEST_ID_HEADER])
    socket.end(rawProblem(405, detail, requestId, { Allow: allow.join(', ') }, path), () => socket.destroy())
  }
}

function clientErrorProblem(error: ParserError, requestTimeoutMs: number): [number, string] {
  if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') return [408, `The request did not arrive in full within ${requestTimeoutMs} ms.`]
  if (error.code === 'HPE_HEADER_OVERFLOW') return [431, 'The request line and headers are larger than 16 KiB.']
  // Node answers this one 413 itself: the body's chunks carry more than 16 KiB of extensions.
  if (error.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW') return [413, 'The chunk extensions of the body are larger than 16 KiB; send its chunks without them.']
  return [400, `The request is not valid HTTP/1.1${error.code ? ` (${error.code})` : ''}.`]
}

/** Node answers an Expect other than 100-continue itself, with an empty 417, unless someone listens (also on the worker's listener). */
export function onCheckExpectation(request: IncomingMessage, response: ServerResponse): void {
  answerBeforeFastify(request, response, 417, `Expect: ${String(request.headers.expect).slice(0, 100)} cannot be met; only 100-continue is supported.`)
}

/**
 * A 'checkContinue' listener. Without one, Node answers every `Expect: 100-continue` with 100 Continue
 * before Fastify sees the request, inviting a body that is then refused (413) once sent: a Content-Length
 * over the body limit is refused at once, and the client need not send it. Other requests go on as usual.
 */
function checkContinue(server: Server, bodyLimit: number) {
  return (request: IncomingMessage, response: ServerResponse): void => {
    const length = Number(request.headers['content-length'])
    if (length > bodyLimit) return answerBeforeFastify(request, response, 413, `The body is larger than the ${bodyLimit} bytes a request may send.`)
    response.writeContinue()
    server.emit('request', request, response)
  }
}

/** A problem answered on Node's response, for a request Fastify never sees; the connection then closes. */
function answerBeforeFastify(request: IncomingMessage, response: ServerResponse, status: number, detail: string): void {
  const requestId = requestIdFrom(request.headers[REQUEST_ID_HEADER])
  const body = JSON.stringify({ ...problemBody(status, detail, (request.url ?? '/').split('?')[0]), requestId })
  response.writeHead(status, {
    'content-type': 'application/problem+json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', connection: 'close',
    [REQUEST_ID_HEADER]: requestId
  })
  response.end(body)
}

interface MediaRange {
  range: string
  q: number
}

/**
 * Whether an Accept header lets us answer JSON: application/json's quality, set by the most specific range
 * that names it (RFC 9110 12.5.1: a wildcard beside `application/json;q=0` does not undo it), or, where none does,
 * application/problem+json's. A header naming no media range at all is ignored.
 */
export function acceptsJson(accept: string | undefined): boolean {
  if (accept === undefined) return true
  const ranges: MediaRange[] = accept.split(',').map((part) => part.split(';')).filter(([range]) => range?.includes('/'))
    .map(([range = '', ...params]) => ({ range: range.trim().toLowerCase(), q: quality(params) }))
  if (ranges.length === 0) return true
  return (qualityOf(ranges, 'application/json') ?? qualityOf(ranges, 'application/problem+json') ?? 0) > 0
}

/** The quality of the most specific ranges that match an application/ type; undefined when none does. */
function qualityOf(ranges: MediaRange[], type: string): number | undefined {
  for (const candidate of [type, 'application/*', '*/*']) {
    const matching = ranges.filter((r) => r.range === candidate)
    if (matching.length > 0) return Math.max(...matching.map((r) => r.q))
  }
  return undefined
}

function quality(params: string[]): number {
  const q = params.map((p) => p.trim().toLowerCase()).find((p) => p.startsWith('q='))
  return q === undefined ? 1 : Number(q.slice(2)) || 0
}

/**
 * The content codings (RFC 9110 8.4) other than identity a request's body says it is sent in; none when
 * it has no body, which Fastify reads only for methods other than GET and HEAD. We decode none.
 */
function bodyCodings(method: string, headers: IncomingHttpHeaders): string[] {
  const coding = headers['content-encoding']
  if (coding === undefined || method === 'GET' || method === 'HEAD') return []
  const length = headers['content-length']
  if (headers['transfer-encoding'] === undefined && (length === undefined || length === '0')) return []
  return codingsBut(coding, 'identity')
}

/** The codings a header lists (lower-cased, empty entries dropped), but the one that changes nothing. */
function codingsBut(list: string, plain: string): string[] {
  return list.split(',').map((c) => c.trim().toLowerCase()).filter((c) => c !== '' && c !== plain)
}

/**
 * The transfer codings (RFC 9112 7) other than chunked a request's body says it is sent in. Node's parser
 * takes a list that ends in chunked (`gzip, chunked`) and undoes only the chunking, so the body would be
 * read as if it were not compressed: a client that did compress it was told its JSON is not valid, and one
 * that named a coding it did not apply had its body taken anyway. We decode none.
 */
function transferCodings(method: string, headers: IncomingHttpHeaders): string[] {
  const coding = headers['transfer-encoding']
  if (coding === undefined || method === 'GET' || method === 'HEAD') return []
  return codingsBut(coding, 'chunked')
}

/** A Host value (RFC 9112 3.2): a host name, an IPv4 address or a bracketed IP literal (RFC 3986 3.2.2; with a zone, RFC 6874), then an optional port; empty is allowed. */
const HOST = /^(?:\[[\w.:~!$&'()*+,;=%-]+\]|[\w.~!$&'()*+,;=%-]*)(?::\d*)?$/

/**
 * Why a request's Host is refused, or undefined: RFC 9112 3.2 has a server answer 400 to an HTTP/1.1
 * request without Host, and to one with more than one Host or a Host that is not a host[:port]. Node
 * would answer the first with an empty 400 before any hook runs, so the server is built with
 * `requireHostHeader: false` and the check is made here (HTTP/1.0 has no Host to require); Node keeps
 * the first of two Hosts, so a request naming two hosts was served as if it named one.
 */
export function hostProblem(request: IncomingMessage): string | undefined {
  const host = request.headers.host
  if (host === undefined) {
    return request.httpVersionMajor === 1 && request.httpVersionMinor >= 1 ? 'An HTTP/1.1 request must carry a Host header (RFC 9112 3.2).' : undefined
  }
  const hosts = request.rawHeaders.filter((name, i) => i % 2 === 0 && name.toLowerCase() === 'host').length
  if (hosts > 1) return `The request carries ${hosts} Host headers; send one (RFC 9112 3.2).`
  if (!HOST.test(host)) return 'The Host header is not a host name or address with an optional port (RFC 9112 3.2).'
  return undefined
}

// The explorer serves HTML and scripts, metrics the Prometheus text format: every other route answers JSON.
const NOT_JSON = /^\/(docs|metrics)(\/|$)/

async function protocolErrorsPlugin(app: FastifyInstance): Promise<void> {
  app.server.on('checkExpectation', onCheckExpectation)
  app.server.on('checkContinue', checkContinue(app.server, app.initialConfig.bodyLimit ?? DEFAULT_BODY_LIMIT))
  app.server.on('connect', refuseConnect((path) => allowedMethods(app, path)))
  app.addHook('onRequest', async (request) => {
    const host = hostProblem(request.raw)
    if (host) throw new ProblemError(400, 'Bad Request', host)
    if ((request.raw.url ?? '').length > MAX_URL_LENGTH) {
      throw new ProblemError(414, 'URI Too Long', `The URL is longer than ${MAX_URL_LENGTH} characters.`)
    }
    if (hasEmptyParam(request.params)) {
      throw new ProblemError(404, 'Not Found', `No route ${request.method} ${(request.raw.url ?? '/').split('?')[0]}.`)
    }
    if (!request.is404 && !NOT_JSON.test(request.routeOptions.url ?? '') && !acceptsJson(request.headers.accept)) {
      throw new ProblemError(406, 'Not Acceptable', 'This route answers application/json (errors application/problem+json), which the Accept header excludes.')
    }
    const codings = bodyCodings(request.method, request.headers)
    if (!request.is404 && codings.length > 0) {
      // RFC 9110 12.5.3: a 415 for a content coding names the codings accepted, telling it apart from a media type's.
      throw new ProblemError(415, 'Unsupported Media Type', `The content coding ${codings.join(', ').slice(0, 100)} is not supported: send the body uncompressed.`,
        undefined, { 'accept-encoding': 'identity' })
    }
    const transfer = transferCodings(request.method, request.headers)
    if (!request.is404 && transfer.length > 0) {
      // RFC 9112 6.1 suggests 501; Node's own parser answers a transfer coding it cannot read with 400, as this does.
      throw new ProblemError(400, 'Bad Request', `The transfer coding ${transfer.join(', ').slice(0, 100)} is not supported: send the body chunked alone or with a Content-Length.`)
    }
  })
}

export default fp(protocolErrorsPlugin, { name: 'protocol-errors' })
