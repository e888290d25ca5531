import { readFileSync } from 'node:fs'

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
  paths: Record<string, Record<string, { parameters?: Parameter[]; requestBody?: { content: Record<string, { schema: Schema }> }; responses: Record<string, unknown> }>>
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
