import { STATUS_CODES } from 'node:http'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { isDatabaseUnavailable, isResourceShortage, UNAVAILABLE_RETRY_AFTER_S, unavailableReason } from '../db/errors.js'
import { ProblemError, type FieldError } from '../errors.js'
import { nulCharacters } from '../lib/json-limits.js'
import { REQUEST_ID_HEADER } from '../lib/request-id.js'
import { unknownParameters } from './query-strings.js'
import { condenseUnionErrors } from './union-errors.js'
import { clearerMessage } from './validation-messages.js'
import { ALL_ERRORS_MAX_VALUES, checkedToFirstError } from './validation.js'

const STATUS_TITLES: Record<number, string> = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed',
  406: 'Not Acceptable', 408: 'Request Timeout', 409: 'Conflict', 412: 'Precondition Failed', 413: 'Content Too Large',
  414: 'URI Too Long', 415: 'Unsupported Media Type', 417: 'Expectation Failed', 422: 'Unprocessable Content',
  429: 'Too Many Requests', 431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 503: 'Service Unavailable'
}

/** A problem body for any status, also where no Fastify request exists (errors of Node's HTTP parser). */
export function problemBody(status: number, detail: string, instance?: string, errors?: FieldError[]): ProblemBody {
  return {
    type: 'about:blank',
    title: STATUS_TITLES[status] ?? STATUS_CODES[status] ?? 'Error',
    status,
    detail,
    ...(instance === undefined ? {} : { instance }),
    ...(errors && errors.length > 0 ? { errors } : {})
  }
}

// Postgres error codes a client can cause; everything else is our fault and answers 500.
const PG_CLIENT_ERRORS: Record<string, [number, string]> = {
  '23505': [409, 'A resource with these values already exists.'],
  '23503': [409, 'The request refers to a resource that does not exist or is still in use.'],
  '22P02': [400, 'A value has the wrong format.'],
  '22003': [400, 'A number is out of range.'],
  '22001': [400, 'A value is too long.'],
  // NUL (U+0000) in text (22021) or as \u0000 in jsonb (22P05): Postgres cannot store it.
  '22021': [400, 'The text contains a character that cannot be stored (e.g. NUL, U+0000).'],
  '22P05': [400, 'The text contains a character that cannot be stored (e.g. NUL, U+0000).'],
  '40001': [409, 'The request collided with a concurrent change; retry it.'],
  '40P01': [409, 'The request collided with a concurrent change; retry it.'],
  '55P03': [409, 'The request collided with a concurrent change; retry it.']
}

/** The codes of Postgres refusing a NUL character (text, jsonb), which nulErrors places in the request. */
const NUL_ERRORS = new Set(['22021', '22P05'])
const NUL_ERRORS_LISTED = 20

/**
 * Where the request's query string and body hold a NUL, as the per-field errors of the 400 Postgres's refusal
 * answers (a schema without a rule for it let it through): a string holding one, or the object whose property
 * name does. Walked only once Postgres refused the request, so no request pays for it otherwise.
 */
function nulErrors(request: FastifyRequest): FieldError[] {
  return [...nulCharacters(request.query, '/querystring', NUL_ERRORS_LISTED), ...nulCharacters(request.body, '/body', NUL_ERRORS_LISTED)].slice(0, NUL_ERRORS_LISTED)
}

/**
 * Fastify's refusals of a request's Content-Type, whose own messages ("Unsupported Media Type", "Method 'QUERY' must
 * provide a 'Content-Type' header.") say neither what was sent nor what to send; undefined for other errors.
 */
function contentTypeProblem(code: string | undefined, sent: string | undefined): [number, string, FieldError] | undefined {
  const missing = sent === undefined || sent.trim() === ''
  const field = { pointer: '/headers/content-type', detail: missing ? 'missing' : 'not application/json' }
  if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    return [415, missing ? 'The body comes without a Content-Type: send it as application/json.'
      : `The body's Content-Type ${JSON.stringify(sent.slice(0, 100))} is not taken: send it as application/json.`, field]
  }
  if (code === 'FST_ERR_ROUTE_MISSING_CONTENT_TYPE') return [400, 'A QUERY request must name its body\'s Content-Type: send it as application/json.', field]
  return undefined
}

/**
 * What a unique constraint means, for a request that raced another past the check made before it
 * wrote (the check answers the same 409 with its own words when nothing races).
 */
export const UNIQUE_CONFLICTS: Record<string, FieldError> = {
  tenants_web_id_key: { pointer: '/body/webId', detail: 'another tenant already has this webId' },
  users_email_key: { pointer: '/body/email', detail: 'another user of this tenant already has this e-mail address' },
  service_parameters_service_id_name_key: { pointer: '/body/name', detail: 'the service already has a parameter of this name' }
}

export interface ProblemBody {
  type: string
  title: string
  status: number
  detail: string
  instance?: string
  errors?: FieldError[]
  /** The request's X-Request-Id, to quote to an operator. */
  requestId?: string
}

/** Sends a problem that names its request, in the body and in X-Request-Id. */
export function sendProblem(reply: FastifyReply, body: ProblemBody, headers: Record<string, string> = {}): FastifyReply {
  const requestId = reply.request.id
  return reply.code(body.status).headers({ ...headers, [REQUEST_ID_HEADER]: requestId }).type('application/problem+json').send({ ...body, requestId })
}

function problem(status: number, detail: string, request: FastifyRequest, errors?: FieldError[]): ProblemBody {
  return problemBody(status, detail, request.url.split('?')[0] ?? request.url, errors)
}

// What a failed validation of each part of a request is called, as "The request's …"'s subject and verb.
const PARTS: Record<string, string> = {
  body: 'body does not match its',
  params: 'path parameters do not match their',
  querystring: 'query string does not match its',
  headers: 'headers do not match their'
}

function validationErrors(error: FastifyError): FieldError[] {
  const context = error.validationContext ?? 'body'
  return condenseUnionErrors((error.validation ?? []).map(clearerMessage)).map((v) => {
    const params = v.params as Record<string, unknown>
    const extra = typeof params.additionalProperty === 'string' ? `/${escapePointer(params.additionalProperty)}` :
      typeof params.missingProperty === 'string' ? `/${escapePointer(params.missingProperty)}` : ''
    return { pointer: `/${context}${v.instancePath}${extra}`, detail: v.message ?? 'is invalid' }
  })
}

/**
 * A body left out (or sent empty as JSON) where the route needs an object: Ajv's "must be object" at /body
 * read as if a body of another type had been sent.
 */
function isMissingBody(error: FastifyError, request: FastifyRequest): boolean {
  if (error.validationContext !== 'body' || request.body !== undefined) return false
  return (error.validation ?? []).some((v) => v.keyword === 'type' && v.instancePath === '' && (v.params as { type?: unknown }).type === 'object')
}

/** An error Fastify or a plugin marked as the client's (a 4xx), whatever its code. */
function isClientError(error: FastifyError): boolean {
  return typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500
}

/** A property's name as a JSON Pointer's reference token (RFC 6901 3), as Ajv writes the instancePath before it. */
const escapePointer = (name: string) => name.replaceAll('~', '~0').replaceAll('/', '~1')

/** How often an outage's count of 503s is logged while it lasts. */
const UNAVAILABLE_LOG_MS = 5000

async function problemsPlugin(app: FastifyInstance): Promise<void> {
  // An outage answers every request 503: a warning at its first, then every UNAVAILABLE_LOG_MS while it
  // lasts how many more were answered so (each request's own line still has its status), and the last
  // count when the app closes.
  let answered503 = 0
  let lastError: unknown
  let window: NodeJS.Timeout | undefined
  const report = () => {
    if (answered503 > 0) {
      const requests = answered503 === 1 ? '1 more request' : `${answered503} more requests`
      app.log.warn({ err: lastError, answered503 }, `${unavailableReason(lastError)}: ${requests} answered 503 since the last warning`)
    } else {
      clearInterval(window)
      window = undefined
    }
    answered503 = 0
    lastError = undefined
  }
  const warnUnavailable = (request: FastifyRequest, error: unknown) => {
    if (window !== undefined) {
      answered503++
      lastError = error
      return
    }
    request.log.warn({ err: error }, `${unavailableReason(error)}: requests answer 503 with Retry-After`)
    window = setInterval(report, UNAVAILABLE_LOG_MS).unref()
  }
  app.addHook('onClose', async () => {
    if (answered503 > 0) report()
    clearInterval(window)
  })

  app.setErrorHandler((error: FastifyError & { code?: string }, request, reply) => {
    if (error instanceof ProblemError) {
      const body = { ...problem(error.status, error.detail, request, error.errors), title: error.title }
      return sendProblem(reply, body, error.headers)
    }
    if (error.validation) {
      if (isMissingBody(error, request)) {
        const detail = 'The request has no body: this route takes a JSON object, sent as application/json.'
        return sendProblem(reply, problem(400, detail, request, [{ pointer: '/body', detail: 'a JSON object body is required' }]))
      }
      const unknown = error.validationContext === 'querystring' ? unknownParameters(error.validation) : []
      const detail = unknown.length > 0 ? `The query string has ${unknown.length === 1 ? 'a parameter' : 'parameters'} this route does not take: ${unknown.join(', ')}.`
        : `The request's ${PARTS[error.validationContext ?? 'body'] ?? 'body does not match its'} schema.${checkedToFirstError(error.validation)
          ? ` It holds more than ${ALL_ERRORS_MAX_VALUES.toLocaleString('en')} values, so it was checked up to its first error.` : ''}`
      return sendProblem(reply, problem(400, detail, request, validationErrors(error)))
    }
    // A QUERY (RFC 10008 2) must name its content's type; Baton routes none, so one without a Content-Type
    // answers as one with it does (405 naming the methods the path takes, or 404), not 400.
    if (error.code === 'FST_ERR_ROUTE_MISSING_CONTENT_TYPE' && request.is404) return notFound(request, reply)
    const contentType = contentTypeProblem(error.code, request.headers['content-type'])
    if (contentType) return sendProblem(reply, problem(contentType[0], contentType[1], request, [contentType[2]]))
    const pgError = typeof error.code === 'string' ? PG_CLIENT_ERRORS[error.code] : undefined
    if (pgError) {
      request.log.info({ code: error.code }, 'database refused a client request')
      const unique = error.code === '23505' ? UNIQUE_CONFLICTS[(error as { constraint?: string }).constraint ?? ''] : undefined
      if (unique) return sendProblem(reply, problem(409, `The request conflicts with another: ${unique.detail}.`, request, [unique]))
      const errors = NUL_ERRORS.has(error.code!) ? nulErrors(request) : undefined
      return sendProblem(reply, problem(pgError[0], pgError[1], request, errors))
    }
    // A client that went away while its body was read fails the read with node's ECONNRESET "aborted",
    // which Fastify marks a 400: the client's doing, not the database's, though the code is the same.
    if (isDatabaseUnavailable(error) && !isClientError(error)) {
      warnUnavailable(request, error)
      // The client hears whether writes are refused, and no more of the database's state (the log has it).
      const detail = `${isReadOnly(error) ? 'The database takes no writes (read-only)' : isResourceShortage(error) ? 'The database is short of resources' : 'The database did not answer'}; retry shortly. A change cut off this way may or may not have been made:`
        + ' a start retried with the same Idempotency-Key is never made twice.'
      return sendProblem(reply, problem(503, detail, request), { 'retry-after': String(UNAVAILABLE_RETRY_AFTER_S) })
    }
    const status = error.statusCode ?? 500
    if (status >= 400 && status < 500) {
      if (error.code === 'ECONNRESET') request.log.info({ err: error }, 'the client went away before its request arrived in full')
      return sendProblem(reply, problem(status, error.message, request))
    }
    request.log.error({ err: error }, 'request failed')
    return sendProblem(reply, problem(500, 'Something went wrong on our side; it has been logged.', request))
  })

  app.setNotFoundHandler(notFound)

  function notFound(request: FastifyRequest, reply: FastifyReply): FastifyReply {
    const path = request.url.split('?')[0] ?? request.url
    // A path that exists under other methods answers 405 and names them, as RFC 9110 asks.
    const allowed = allowedMethods(app, path)
    // A route that takes this method and found nothing there (the explorer's static files, /docs/static/x.js)
    // is a 404: a 405 said "GET is not allowed on /docs/static/x.js; use GET, HEAD".
    if (allowed.includes(request.method)) return sendProblem(reply, problem(404, `Nothing is found at ${path}.`, request))
    if (allowed.length > 0) {
      return sendProblem(reply, problem(405, `${request.method} is not allowed on ${path}; use ${allowed.join(', ')}.`, request), { allow: allowed.join(', ') })
    }
    return sendProblem(reply, problem(404, `No route ${request.method} ${path}.`, request))
  }
}

const ROUTE_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']

/**
 * The methods some route takes at this path, for a 405's Allow: none for a path that cannot be decoded,
 * nor for a route the path names with an empty id (answered 404, hasEmptyParam).
 */
export function allowedMethods(app: FastifyInstance, path: string): string[] {
  try {
    decodeURIComponent(path)
  } catch {
    return []
  }
  return ROUTE_METHODS.filter((method) => {
    const route = app.findRoute({ method, url: path })
    return route !== null && !hasEmptyParam(route.params)
  })
}

/** `/v1/users//` matches `/v1/users/:id` with an empty id: no resource has one. A wildcard (`*`) may be empty. */
export function hasEmptyParam(params: unknown): boolean {
  return Object.entries((params ?? {}) as Record<string, string>).some(([name, value]) => value === '' && name !== '*')
}

const isReadOnly = (error: unknown) => (error as { code?: unknown } | undefined)?.code === '25006'

export default fp(problemsPlugin, { name: 'problems' })
