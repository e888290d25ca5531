import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { Clock } from '../../adapters/clock.js'
import type { DB } from '../../db/connect.js'
import { isDatabaseUnavailable, UNAVAILABLE_RETRY_AFTER_S } from '../../db/errors.js'
import { hashKey, sameHash } from '../../lib/keys.js'
import { METRICS_CONTENT_TYPE, type BatonMetrics } from '../../lib/metrics.js'
import { REQUEST_ID_HEADER, requestIdFrom } from '../../lib/request-id.js'
import { problemBody } from '../../plugins/problems.js'
import { answerClientError, hostProblem, onCheckExpectation, refuseConnect } from '../../plugins/protocol-errors.js'
import { scrapeMetrics } from './metrics.js'
import { readinessCheck } from './readiness.js'
import { redactUrl } from '../../redacted-paths.js'

export interface WorkerServerOptions {
  db: DB
  clock: Clock
  metrics: BatonMetrics
  /** The operator key's hash, read at each /metrics request: a key the API generates or rotates later counts at once. */
  operatorKeyHash: () => Promise<string | undefined>
  log: { warn(obj: object, msg?: string): void; error(obj: object, msg?: string): void }
  /** True once the process began to stop: /health/ready then answers 503. */
  stopping?: () => boolean
}

export interface WorkerServer {
  /** e.g. http://127.0.0.1:3001 */
  address: string
  close(): Promise<void>
}

interface Answer {
  status: number
  /** Text as it is, or a value sent as JSON (a problem gets the request id). */
  body: string | object
  headers?: Record<string, string>
}

const RETRY = { 'retry-after': String(UNAVAILABLE_RETRY_AFTER_S) }

/**
 * The worker's own small HTTP listener (WORKER_HTTP_PORT): /health/live, /health/ready and /metrics
 * answer as on the API, problems included, without loading Fastify into the worker.
 */
export async function startWorkerServer(options: WorkerServerOptions, host: string, port: number): Promise<WorkerServer> {
  const routes = workerRoutes(options)
  // As on the API, what Node refuses before a route runs is a problem too: an unparsable request, headers
  // past 16 KiB, an Expect other than 100-continue, and a Host that is missing (HTTP/1.1), given twice or no host[:port] (checked in answer).
  const server = createServer({ requireHostHeader: false }, (request, response) => {
    respond(request, response, routes, options.log).catch((error: unknown) => {
      options.log.error({ err: error, path: redactUrl(request.url ?? '') }, 'worker request failed')
      response.destroy()
    })
  })
  server.on('connect', refuseConnect((path) => (routeOf(routes, path) ? ['GET', 'HEAD'] : [])))
  server.on('clientError', (error: Error, socket: Socket) => answerClientError(error, socket, server.requestTimeout))
  server.on('checkExpectation', onCheckExpectation)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const { address, port: bound } = server.address() as AddressInfo
  const shown = address === '0.0.0.0' || address === '::' ? '127.0.0.1' : address.includes(':') ? `[${address}]` : address
  return {
    address: `http://${shown}:${bound}`,
    close: () => new Promise((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
  }
}

async function respond(request: IncomingMessage, response: ServerResponse, routes: Record<string, Route>, log: WorkerServerOptions['log']): Promise<void> {
  const requestId = requestIdFrom(request.headers[REQUEST_ID_HEADER])
  const path = pathOf(request.url ?? '/')
  let result: Answer
  try {
    result = await answer(request, path, routes)
  } catch (error) {
    const unavailable = isDatabaseUnavailable(error)
    if (!unavailable) log.error({ err: error, requestId, path }, 'worker request failed')
    result = unavailable ? problem(503, 'The database did not answer; retry shortly.', RETRY, path)
      : problem(500, 'Something went wrong on our side; it has been logged.', {}, path)
  }
  const { status, body, headers } = result
  const text = typeof body === 'string' ? body : JSON.stringify(status >= 400 ? { ...body, requestId } : body)
  // Probes and metrics are state of the moment, as on the API: stored by no cache.
  response.writeHead(status, { ...headers, 'cache-control': 'no-store', [REQUEST_ID_HEADER]: requestId, 'content-length': Buffer.byteLength(text) })
  response.end(text)
}

/**
 * The path a request target names. Of the absolute form (`GET http://host/health/live`), which RFC 9112 3.2.2
 * says a server must accept and the API's router takes, the part after the authority: it answered 404.
 */
function pathOf(target: string): string {
  return target.replace(/^https?:\/\/[^/?]*/i, '').split('?')[0] || '/'
}

type Route = (request: IncomingMessage) => Promise<Answer>

function workerRoutes({ db, clock, metrics, operatorKeyHash, log, stopping }: WorkerServerOptions): Record<string, Route> {
  const unready = readinessCheck(db, stopping)
  return {
    '/health/live': async () => json(200, { status: 'ok' }),
    '/health/ready': async () => {
      const why = await unready()
      if (!why) return json(200, { status: 'ok' })
      if (why.error) log.warn({ err: why.error }, 'readiness check failed')
      return problem(503, why.detail, RETRY, '/health/ready')
    },
    '/metrics': async (request) => {
      const token = /^Bearer\s+(\S+)\s*$/i.exec(request.headers.authorization ?? '')?.[1]
      if (!token) return problem(401, 'Send the operator key as "Authorization: Bearer <key>".', { 'www-authenticate': 'Bearer' }, '/metrics')
      const expected = await operatorKeyHash()
      if (!expected || !sameHash(hashKey(token), expected)) return problem(403, 'This route needs the operator key.', {}, '/metrics')
      return { status: 200, body: await scrapeMetrics(db, metrics, clock.now()), headers: { 'content-type': METRICS_CONTENT_TYPE } }
    }
  }
}

async function answer(request: IncomingMessage, path: string, routes: Record<string, Route>): Promise<Answer> {
  const host = hostProblem(request)
  if (host) return problem(400, host, {}, path)
  const route = routeOf(routes, path)
  if (!route) return problem(404, `No route ${request.method} ${path}.`, {}, path)
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    return problem(405, `${request.method} is not allowed on ${path}; use GET, HEAD.`, { allow: 'GET, HEAD' }, path)
  }
  return route(request)
}

// `/health/ready/` is `/health/ready`, as on the API.
function routeOf(routes: Record<string, Route>, path: string): Route | undefined {
  return routes[path.length > 1 ? path.replace(/\/$/, '') : path]
}

function json(status: number, value: object): Answer {
  return { status, body: value, headers: { 'content-type': 'application/json; charset=utf-8' } }
}

function problem(status: number, detail: string, headers: Record<string, string> = {}, instance?: string): Answer {
  return { status, body: problemBody(status, detail, instance), headers: { 'content-type': 'application/problem+json', ...headers } }
}
