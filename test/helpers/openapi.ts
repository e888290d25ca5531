import { readFileSync } from 'node:fs'
import { Ajv, type ValidateFunction } from 'ajv'
import addFormats from 'ajv-formats'

// The checked-in OpenAPI document as a list of operations, for tests that cover every operation the
// API declares (the authorization matrix, the property-based test) without listing them by hand.

export type Schema = {
  type?: string
  format?: string
  pattern?: string
  enum?: unknown[]
  anyOf?: Schema[]
  properties?: Record<string, Schema>
  required?: string[]
  additionalProperties?: boolean | Schema
  items?: Schema
  minItems?: number
  maxItems?: number
  uniqueItems?: boolean
  minLength?: number
  maxLength?: number
  minimum?: number
  maximum?: number
  minProperties?: number
  maxProperties?: number
  nullable?: boolean
  $ref?: string
}

export interface Parameter {
  name: string
  in: 'path' | 'query' | 'header'
  required?: boolean
  schema: Schema
}

export interface Operation {
  /** `GET /v1/users/{id}`: how tests name it. */
  name: string
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'
  path: string
  parameters: Parameter[]
  body?: Schema
  responses: number[]
}

interface Document {
  paths: Record<string, Record<string, { parameters?: Parameter[]; requestBody?: { content: Record<string, { schema: Schema }> }; responses: Record<string, Response> }>>
  components: { schemas: Record<string, Schema> }
}

interface Response {
  content?: Record<string, { schema: Schema }>
}

export const DOCUMENT = JSON.parse(readFileSync(new URL('../../openapi/openapi.json', import.meta.url), 'utf8')) as Document

export const OPERATIONS: Operation[] = Object.entries(DOCUMENT.paths).flatMap(([path, methods]) =>
  Object.entries(methods).map(([method, op]) => ({
    name: `${method.toUpperCase()} ${path}`,
    method: method.toUpperCase() as Operation['method'],
    path,
    parameters: op.parameters ?? [],
    ...(op.requestBody ? { body: op.requestBody.content['application/json']?.schema ?? {} } : {}),
    responses: Object.keys(op.responses).map(Number)
  })))

/** The path with its parameters filled in by `value(name, path)`. */
export function fillPath(op: Operation, value: (name: string) => string): string {
  return op.path.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(value(name)))
}

export interface SampleHints {
  /** A uuid for a property of this name (e.g. maintainerUserId), or for a path parameter. */
  uuid(name: string): string
}

/** A small instance of the schema that passes it: required properties only, lower bounds, first branches. */
export function sampleValid(schema: Schema, hints: SampleHints, name = ''): unknown {
  if (schema.anyOf) return sampleValid(schema.anyOf[0]!, hints, name)
  if (schema.enum) return schema.enum[0]
  switch (schema.type) {
    case 'object': return sampleObject(schema, hints)
    case 'array': return sampleArray(schema, hints, name)
    case 'integer':
    case 'number': return Math.min(schema.maximum ?? Number.MAX_SAFE_INTEGER, Math.max(schema.minimum ?? 1, 1))
    case 'boolean': return true
    case 'string': return sampleString(schema, hints, name)
    default: return {}
  }
}

function sampleObject(schema: Schema, hints: SampleHints): Record<string, unknown> {
  const properties = schema.properties ?? {}
  const names = new Set(schema.required ?? [])
  const first = Object.keys(properties)[0]
  if (names.size < (schema.minProperties ?? 0) && first) names.add(first)
  return Object.fromEntries([...names].map((key) => [key, sampleValid(properties[key] ?? {}, hints, key)]))
}

function sampleArray(schema: Schema, hints: SampleHints, name: string): unknown[] {
  const count = schema.minItems ?? 0
  const items = schema.items ?? {}
  if (schema.uniqueItems && items.enum) return items.enum.slice(0, count)
  return Array.from({ length: count }, () => sampleValid(items, hints, name))
}

function sampleString(schema: Schema, hints: SampleHints, name: string): string {
  if (schema.format === 'uuid') return hints.uuid(name)
  if (schema.format === 'email') return 'someone@example.com'
  if (schema.format === 'date-time') return new Date().toISOString()
  if (schema.pattern?.includes('A-Za-z0-9_-')) return `w${Math.random().toString(36).slice(2, 10)}`
  return 'x'.repeat(Math.max(schema.minLength ?? 1, 1))
}

/** The document's schemas for Ajv, each `$ref` naming them in the one place they are added (COMPONENTS). */
const COMPONENTS = 'openapi-components'
const withComponents = <T>(value: T): T => forAjv(JSON.parse(JSON.stringify(value).replaceAll('"#/components/', `"${COMPONENTS}#/components/`))) as T

/**
 * OpenAPI 3.0.3's `nullable: true` as JSON Schema, as strict validators read it: null added to the `type`
 * beside it, and to nothing else (an `enum` beside it must list null too). A `nullable` without a `type`
 * takes no null, so a null the server sends there is a mismatch.
 */
function forAjv(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(forAjv)
  if (schema === null || typeof schema !== 'object') return schema
  const { nullable, ...rest } = schema as Record<string, unknown>
  const copy = Object.fromEntries(Object.entries(rest).map(([key, value]) => [key, DATA.has(key) ? value
    : key === 'properties' ? Object.fromEntries(Object.entries(value as object).map(([name, property]) => [name, forAjv(property)])) : forAjv(value)]))
  if (nullable === true && typeof copy.type === 'string') copy.type = [copy.type, 'null']
  return copy
}
/** Keywords whose values are data, not schemas. */
const DATA = new Set(['enum', 'default', 'example'])
let ajv: Ajv | undefined
const validators = new Map<string, ValidateFunction>()

/**
 * Why a body does not match what the document says `op` answers with `status`, or undefined: a status
 * it does not list, another content type, or a body its schema refuses (the first few errors). Each
 * distinct schema is compiled once. `extra` are statuses any operation may answer (406, 413...): those are problems.
 */
export function responseMismatch(op: Operation, status: number, contentType: string, body: string, extra: number[] = []): string | undefined {
  const responses = DOCUMENT.paths[op.path]![op.method.toLowerCase()]!.responses
  const documented = responses[String(status)] ?? (extra.includes(status) ? { content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } } : undefined)
  if (!documented) return `${status}, which ${op.name} does not document`
  const content = Object.entries(documented.content ?? {})
  if (content.length === 0) return body === '' ? undefined : `${status} has a body where ${op.name} documents none: ${body.slice(0, 200)}`
  const media = content.find(([type]) => contentType.split(';')[0]!.trim().toLowerCase() === type)
  if (!media) return `${status} is ${contentType || 'without a content type'}, not ${content.map(([type]) => type).join(' or ')}`
  if (!media[0].endsWith('json')) return undefined
  const validate = validator(media[1].schema)
  let value: unknown
  try {
    value = JSON.parse(body)
  } catch {
    return `${status} is not JSON: ${body.slice(0, 200)}`
  }
  if (validate(value)) return undefined
  const errors = (validate.errors ?? []).slice(0, 3).map((e) => `${e.instancePath || '/'} ${e.message ?? ''}`).join('; ')
  return `${status} does not match ${op.name}'s schema (${errors}): ${body.slice(0, 200)}`
}

/** One validator for each distinct schema: most operations' errors share the Problem schema. */
function validator(schema: Schema): ValidateFunction {
  const key = JSON.stringify(schema)
  if (!ajv) {
    // OpenAPI 3.0: `nullable` as Ajv reads it, `example` not a keyword Ajv knows.
    ajv = new Ajv({ strict: false, allErrors: true })
    addFormats.default(ajv)
    ajv.addSchema({ $id: COMPONENTS, components: withComponents(DOCUMENT.components) })
  }
  let validate = validators.get(key)
  if (!validate) validators.set(key, validate = ajv.compile(withComponents(schema)))
  return validate
}
