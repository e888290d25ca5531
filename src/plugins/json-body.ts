import { isUtf8 } from 'node:buffer'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { badRequest, unprocessable, type FieldError } from '../errors.js'
import { firstNonFinite, firstTooDeep, jsonTextNestsDeeperThan, loneSurrogates, MAY_HOLD_LONE_SURROGATE, pointerStep } from '../lib/json-limits.js'

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
 * Fastify's own JSON parser (with its prototype-poisoning checks), refusing, on the routes that take a
 * body, bodies nested deeper than BODY_MAX_DEPTH (422) and numbers it would make Infinity (400). JSON
 * is the only body taken: Fastify's text/plain parser goes, so such a body answers 415 as any other
 * type does, not a 400 from the schema that it is not an object. An empty body is no body, as without a Content-Type: clients that send
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
    parse(request, body, (error, parsed) => {
      // A body the parser refused may still be JSON, holding a name it refuses: read as plain JSON, it is checked as any other
      // (its depth first, so that a pointer is at most BODY_MAX_DEPTH levels long), and a route that takes no body ignores it as any other.
      const value = error ? plainJson(body) : parsed
      if (value === undefined) return done(error, undefined)
      if (error && !takesBody(request)) return done(null, undefined)
      if (body.length > 2 * BODY_MAX_DEPTH && takesBody(request) && jsonTextNestsDeeperThan(body, BODY_MAX_DEPTH)) {
        return done(tooDeep(firstTooDeep(value, BODY_MAX_DEPTH, '/body') ?? '/body'), undefined)
      }
      if (error) {
        const named = prototypeKeys(value, '/body')
        return done(named.length > 0 ? prototypeNames(named) : error, undefined)
      }
      if (MAY_HOLD_LONE_SURROGATE.test(body) && takesBody(request)) {
        const lone = loneSurrogates(value, '/body')
        if (lone.length > 0) return done(notUnicode(lone), undefined)
      }
      const pointer = MAY_OVERFLOW.test(body) && takesBody(request) ? firstNonFinite(value, '/body') : undefined
      if (pointer === undefined) return done(null, value)
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

/** The body as plain JSON, which keeps a key `__proto__` as data; undefined when it is no JSON. A leading BOM is dropped, as Fastify's parser drops it. */
function plainJson(body: string): unknown {
  try {
    return JSON.parse(body.charCodeAt(0) === 0xfeff ? body.slice(1) : body)
  } catch {
    return undefined
  }
}

/**
 * Fastify's parser (secure-json-parse) refuses a key `__proto__`, and a `constructor` holding a key
 * `prototype`, anywhere in a body, and said "Body is not valid JSON" of such a valid body, naming no
 * field: a client syncing free record fields could not tell which name to drop.
 */
function prototypeNames(errors: FieldError[]) {
  return badRequest('The body holds a property named __proto__, or a constructor holding a prototype, which no Baton resource takes: ' +
    'JavaScript would read it as an object\'s prototype. Rename it.', errors)
}

/** Where a parsed JSON value holds a key `__proto__` or a `constructor` object with a key `prototype`, in the order of the text (at most `max`). */
function prototypeKeys(value: unknown, base: string, max = 20): { pointer: string; detail: string }[] {
  const detail = 'a property name Baton takes in no body (it would set an object\'s prototype)'
  const found: { pointer: string; detail: string }[] = []
  const stack: { value: unknown; pointer: string }[] = [{ value, pointer: base }]
  for (let item = stack.pop(); item !== undefined && found.length < max; item = stack.pop()) {
    if (typeof item.value !== 'object' || item.value === null) continue
    const entries = Object.entries(item.value)
    if (Object.hasOwn(item.value, '__proto__')) found.push({ pointer: `${item.pointer}/__proto__`, detail })
    const constructor = Object.hasOwn(item.value, 'constructor') ? (item.value as Record<string, unknown>).constructor : undefined
    if (typeof constructor === 'object' && constructor !== null && Object.hasOwn(constructor, 'prototype')) {
      found.push({ pointer: `${item.pointer}/constructor/prototype`, detail })
    }
    for (let i = entries.length - 1; i >= 0; i--) stack.push({ value: entries[i]![1], pointer: item.pointer + pointerStep(entries[i]![0]) })
  }
  return found
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
