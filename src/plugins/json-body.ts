import { isUtf8 } from 'node:buffer'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { badRequest, unprocessable, type FieldError } from '../errors.js'
import { firstNonFinite, firstTooDeep, jsonTextNestsDeeperThan, loneSurrogates, MAY_HOLD_LONE_SURROGATE } from '../lib/json-limits.js'

type Done = (error: Error | null, value?: unknown) => void
type JsonParser = (request: FastifyRequest, body: string, done: Done) => void

/*
 * JSON.parse reads a number beyond a double's range (1e400) as Infinity, which JSON.stringify later
 * writes as null: such a body is refused instead. A number overflows only when its integer digits plus
 * its exponent reach 309, so only a text with a three-digit exponent or a run of 210 digits is walked.
 * The test takes 75 ns on a small body; on 1 MiB of 209-digit runs 12 ms, where it took 370 ms without
 * the lookbehind, which starts each run's match once.
 */
const MAY_OVERFLOW = /[eE][+-]?\d{3}|(?<!\d)\d{210}/

/*
 * Levels of objects and arrays a body may nest, the body itself being the first. Ajv's validator of
 * the recursive expression schema, and JSON.stringify after it, overflow the call stack a few hundred
 * and a few thousand levels down, so a deeper body is refused here, before validation. The deepest
 * legal body is some 60 levels: a writeValues value (level 5) of expressions 12 deep, two levels each
 * (`{"and": [...]}`), ending in a literal as deep as a record's field (31); record fields themselves
 * end at 33. A body nested deeper than the bound takes at least twice as many characters, so a
 * shorter one is not read again; a longer one is scanned as text (under 1 µs for a 300-character
 * step, 2 ms for 1 MiB). Every route with a body schema documents the 422 (src/plugins/swagger.ts).
 */
export const BODY_MAX_DEPTH = 100

/**
 * Fastify's own JSON parser (with its prototype-poisoning checks), refusing bodies nested deeper than
 * BODY_MAX_DEPTH (422) and numbers it would make Infinity (400). JSON is the only body taken: Fastify's
 * text/plain parser goes, so such a body answers 415 as any other type does, not a 400 from the schema
 * that it is not an object. An empty body is no body, as without a Content-Type: clients that send
 * `Content-Type: application/json` on every request reach the routes that take none (activation,
 * replay, retry, cancel) instead of a 400, and a route that needs one says so with a pointer. JSON is
 * UTF-8 (RFC 8259 8.1), whatever charset the Content-Type names: bytes that are not, such as a Latin-1
 * "ü", answer 400 instead of being read as U+FFFD and saved so; as does text escaped as half of a
 * surrogate pair alone (`"\ud800"`), which no UTF-8 can write: a text column saved it as U+FFFD without a
 * word, and jsonb refused it with a 400 that named no field.
 */
async function jsonBodyPlugin(app: FastifyInstance): Promise<void> {
  app.addHook('onRoute', (route) => {
    if (bodyMayBeLeftOut(route.schema?.body)) route.preValidation = [noBodyIsEmptyObject, ...[route.preValidation ?? []].flat()]
  })
  app.removeContentTypeParser('text/plain')
  const { onProtoPoisoning = 'error', onConstructorPoisoning = 'error' } = app.initialConfig
  const parse = app.getDefaultJsonParser(onProtoPoisoning, onConstructorPoisoning) as JsonParser
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request: FastifyRequest, bytes: Buffer, done: Done) => {
    if (bytes.length === 0) return done(null, undefined)
    if (!isUtf8(bytes)) return done(notUtf8(), undefined)
    const body = bytes.toString('utf8')
    parse(request, body, (error, value) => {
      if (!error && body.length > 2 * BODY_MAX_DEPTH && takesBody(request) && jsonTextNestsDeeperThan(body, BODY_MAX_DEPTH)) {
        return done(tooDeep(firstTooDeep(value, BODY_MAX_DEPTH, '/body') ?? '/body'), undefined)
      }
      if (!error && MAY_HOLD_LONE_SURROGATE.test(body) && takesBody(request)) {
        const lone = loneSurrogates(value, '/body')
        if (lone.length > 0) return done(notUnicode(lone), undefined)
      }
      const pointer = error || !MAY_OVERFLOW.test(body) ? undefined : firstNonFinite(value, '/body')
      if (pointer === undefined) return done(error, value)
      done(tooLarge(pointer), undefined)
    })
  })
}

/**
 * Whether a route's body schema takes `{}` (an object with no required property and no least number of
 * them): such a body may then be left out and counts as `{}`, as copying a template or cancelling a
 * process need nothing more. The OpenAPI document declares it not required (src/plugins/swagger.ts).
 */
export function bodyMayBeLeftOut(schema: unknown): boolean {
  if (typeof schema !== 'object' || schema === null) return false
  const { type, required, minProperties } = schema as { type?: unknown; required?: unknown[]; minProperties?: number }
  return type === 'object' && (required ?? []).length === 0 && (minProperties ?? 0) === 0
}

async function noBodyIsEmptyObject(request: FastifyRequest): Promise<void> {
  if (request.body === undefined) request.body = {}
}

function notUtf8() {
  return badRequest('The body is not valid UTF-8: JSON is sent as UTF-8, whatever charset the Content-Type names.', [{ pointer: '/body', detail: 'not UTF-8' }])
}

function notUnicode(errors: FieldError[]) {
  return badRequest('The body holds text with half of a surrogate pair alone (a \\uD800–\\uDFFF escape without its other half), which is no Unicode text.', errors)
}

function tooLarge(pointer: string) {
  const where = pointer === '/body' ? '' : ` at ${pointer.slice('/body'.length)}`
  return badRequest(`Body holds a number too large for this API (beyond ±1.8e308)${where}.`, [{ pointer, detail: 'number too large' }])
}

/** Whether the route validates a body (and documents the 422); a route without one leaves it unread. */
function takesBody(request: FastifyRequest): boolean {
  return request.routeOptions.schema?.body !== undefined
}

function tooDeep(pointer: string) {
  return unprocessable(`Body nests objects and arrays deeper than ${BODY_MAX_DEPTH} levels (the body itself being the first); no request needs that many.`,
    [{ pointer, detail: `nested deeper than ${BODY_MAX_DEPTH} levels` }])
}

export default fp(jsonBodyPlugin, { name: 'json-body' })
