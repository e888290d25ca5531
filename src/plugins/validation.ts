import { Ajv, type AnySchema, type Options, type ValidateFunction } from 'ajv'
import addFormats from 'ajv-formats'
import { SerializerSelector } from '@fastify/fast-json-stringify-compiler'
import { nullableRoute, nullableShared, type SharedSchemas } from './nullable-for-serializer.js'
import { withinSmtpLengths } from '../lib/email-lengths.js'
import { strictQuery } from './query-strings.js'

/*
 * Ajv gathers the errors of a schema it calls by reference (the recursive process expression, each item
 * of an `and` list one call) as `vErrors = vErrors === null ? f.errors : vErrors.concat(f.errors)`, which
 * copies every error gathered so far at each call: time in the square of the errors. 4,000 items of an
 * `and` list that each fail (a 32 KB body) held the event loop 79 s. The calls' errors are appended in
 * place instead; the validator's code is otherwise Ajv's own.
 */
const CONCAT_ERRORS = /vErrors = vErrors === null \? ([\w$.]+\.errors) : vErrors\.concat\(\1\);/g
export function appendErrorsInPlace(code: string): string {
  return code.replace(CONCAT_ERRORS, 'if (vErrors === null) vErrors = $1; else for (const e of $1) vErrors.push(e);')
}

const common: Options = { removeAdditional: false, useDefaults: true, allErrors: true, strict: false, code: { process: appendErrorsInPlace } }

/** A UUID as RFC 9562 writes it, in either case (ajv-formats' also takes a `urn:uuid:` prefix, which Postgres refuses). */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/**
 * Marks a string of format uuid to be lowered as it is validated. Baton writes ids in lower case and
 * compares them as text in places (the current step, an owner found by a unique field, a delivery's
 * attempts): an id given in upper case found its row in Postgres, which compares UUIDs as values, and
 * then answered 404, 409 or an empty list where the same id in lower case did not.
 */
const LOWER_CASE = 'x-lower-case'

/**
 * The schema with LOWER_CASE beside every `format: 'uuid'`, wherever it is nested; the same copy for
 * the same schema, so that Ajv, which keeps what it compiled by schema, compiles a shared one once.
 */
function lowerCaseIds(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(lowerCaseIds)
  if (schema === null || typeof schema !== 'object') return schema
  const kept = lowered.get(schema)
  if (kept) return kept
  const copy: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(schema)) copy[key] = lowerCaseIds(value)
  if (copy.format === 'uuid') copy[LOWER_CASE] = true
  lowered.set(schema, copy)
  return copy
}
const lowered = new WeakMap<object, Record<string, unknown>>()

/** ajv-formats' e-mail address, within the lengths SMTP carries. */
const EMAIL = addFormats.default.get('email') as RegExp
function deliverableEmail(text: string): boolean {
  return withinSmtpLengths(text) && EMAIL.test(text)
}

function newAjv(options: Options, externalSchemas: Record<string, unknown>): Ajv {
  const ajv = new Ajv({ ...common, ...options })
  addFormats.default(ajv)
  ajv.addFormat('uuid', UUID)
  ajv.addFormat('email', deliverableEmail)
  ajv.addKeyword({
    keyword: LOWER_CASE,
    schemaType: 'boolean',
    modifying: true,
    validate: (_lower: boolean, data: unknown, _schema?: unknown, where?: { parentData: Record<string | number, unknown>; parentDataProperty: string | number }) => {
      // Only a UUID: the keyword runs before the format, and in a union's branches that fail too.
      if (typeof data === 'string' && UUID.test(data) && where?.parentData !== undefined) where.parentData[where.parentDataProperty] = data.toLowerCase()
      return true
    }
  })
  for (const schema of Object.values(externalSchemas)) ajv.addSchema(lowerCaseIds(schema) as AnySchema)
  return ajv
}

type Compile = (route: { schema: unknown; httpPart?: string | undefined }) => ValidateFunction

/**
 * A body of more values than this (objects, arrays, strings, numbers… at any depth) is checked up to its
 * first error: listing all of them took time and memory with their number, and a body of 1 MiB whose
 * 300,000 items each failed (an expression's `and` of empty objects) held the event loop 37 s, grew the
 * process by some 3 GB and answered 32 MB of errors. A body within it lists every error, as before.
 */
export const ALL_ERRORS_MAX_VALUES = 2000

/** Whether `data` holds more than `max` values, counted until there are (a large body is not walked whole). */
export function holdsMoreValues(data: unknown, max: number): boolean {
  const open: unknown[] = [data]
  let count = 0
  while (open.length > 0) {
    const value = open.pop()
    if (++count > max) return true
    // Each value waiting counts one at least: no more are taken than would pass the limit.
    if (Array.isArray(value)) {
      for (const item of value) if (open.push(item) + count > max) return true
    } else if (value !== null && typeof value === 'object') {
      for (const key in value) if (open.push((value as Record<string, unknown>)[key]) + count > max) return true
    }
  }
  return false
}

/** The errors of bodies checked up to their first error (ALL_ERRORS_MAX_VALUES): the 400 says so. */
const firstErrorsOnly = new WeakSet<object>()
export function checkedToFirstError(errors: unknown): boolean {
  return typeof errors === 'object' && errors !== null && firstErrorsOnly.has(errors)
}

/**
 * A body's validator: every error of a body of at most ALL_ERRORS_MAX_VALUES values, the first of a
 * larger one. Both are compiled on their first use. (A valid body passes either alike.)
 */
function bodyValidator(compileAll: () => ValidateFunction, compileFirst: () => ValidateFunction): ValidateFunction {
  const all = lazyValidator(compileAll)
  const first = lazyValidator(compileFirst)
  const validate = ((data: unknown) => {
    const large = holdsMoreValues(data, ALL_ERRORS_MAX_VALUES)
    const chosen = large ? first : all
    const valid = chosen(data)
    validate.errors = chosen.errors
    if (large && chosen.errors) firstErrorsOnly.add(chosen.errors)
    return valid
  }) as ValidateFunction
  return validate
}

/*
 * Validators and serializers are compiled when a route first needs them, not when the app is built:
 * compiling all of them (about 100 routes' request and response schemas) took about 2 s of CPU a boot,
 * most of an app's build, for routes a process may never serve (each test file boots an app and
 * calls a few). The first request of a route pays a few milliseconds once. test/plugins/schemas.test.ts
 * compiles every one, so a schema Ajv or fast-json-stringify cannot compile still fails the suite.
 */

/** Set by tests that compile every schema when the app is built (see above). */
let eager = false
export function compileSchemasEagerly(value: boolean): void {
  eager = value
}

function lazy<F extends (...args: never[]) => unknown>(compileNow: () => F): F {
  if (eager) return compileNow()
  let compiled: F | undefined
  return ((...args: Parameters<F>) => (compiled ??= compileNow())(...args)) as F
}

/** A validator compiled on its first call; Fastify reads a failed validation's `errors` from it. */
function lazyValidator(compileNow: () => ValidateFunction): ValidateFunction {
  if (eager) return compileNow()
  let compiled: ValidateFunction | undefined
  const validate = ((data: unknown) => {
    compiled ??= compileNow()
    const valid = compiled(data)
    validate.errors = compiled.errors
    return valid
  }) as ValidateFunction
  return validate
}

// Fastify asks for a validator compiler in every plugin context (93 a boot here); building two Ajv
// instances with formats for each cost seconds a boot. Contexts with the same shared schemas share
// one pair, as Fastify's own compiler pools them.
const pool = new Map<string, Compile>()

/**
 * A body is JSON and must carry the right types ("5" is not a number); query strings, path
 * parameters and headers are text, so they are coerced to the schema's types. A query string may hold
 * only the parameters its schema declares, and numbers only in decimal digits (strictQuery, src/plugins/query-strings.ts).
 * Given to Fastify as `schemaController.compilersFactory.buildValidator`, so every context uses it.
 */
export function buildValidator(externalSchemas: Record<string, unknown>): Compile {
  const key = JSON.stringify(externalSchemas)
  let compile = pool.get(key)
  if (!compile) {
    let ajvs: { body: Ajv; text: Ajv } | undefined
    let firstErrorAjv: Ajv | undefined
    const ajvOf = (httpPart: string | undefined) => {
      ajvs ??= { body: newAjv({ coerceTypes: false }, externalSchemas), text: newAjv({ coerceTypes: 'array' }, externalSchemas) }
      return httpPart === 'body' ? ajvs.body : ajvs.text
    }
    compile = ({ schema, httpPart }) => {
      const compileWith = (ajv: () => Ajv) => () => ajv().compile(lowerCaseIds(schema) as AnySchema)
      if (httpPart === 'body') {
        return bodyValidator(compileWith(() => ajvOf('body')), compileWith(() => (firstErrorAjv ??= newAjv({ coerceTypes: false, allErrors: false }, externalSchemas))))
      }
      const validate = lazyValidator(compileWith(() => ajvOf(httpPart)))
      return httpPart === 'querystring' ? strictQuery(schema, validate) : validate
    }
    pool.set(key, compile)
  }
  return compile
}

type SerializerFactory = ReturnType<typeof SerializerSelector>
const serializerFactory: SerializerFactory = SerializerSelector()

/**
 * Fastify's own response serializers (fast-json-stringify), each compiled on its first response, from
 * schemas whose "X or null" unions are written as nullable X (src/plugins/nullable-for-serializer.ts);
 * a route those cannot serve is compiled from the schemas as they are.
 */
export const buildSerializer: SerializerFactory = (externalSchemas, options) => {
  const shared = (externalSchemas ?? {}) as SharedSchemas
  const { schemas, rewritten } = nullableShared(shared)
  const compile = serializerFactory(schemas, options)
  let asWritten: ReturnType<SerializerFactory> | undefined
  return (route) => lazy(() => {
    const schema = nullableRoute(route.schema, shared, rewritten)
    if (schema !== undefined) return compile({ ...route, schema })
    asWritten ??= serializerFactory(externalSchemas, options)
    return asWritten(route)
  })
}
