// What a client generator needs from every operation of the OpenAPI document; `npm run openapi:check` and
// test/openapi-contract.test.ts fail on any gap, so a new route cannot leave one.

type Json = Record<string, unknown>

interface Parameter { in: string; name: string; schema?: Json }
interface Response { description?: string; headers?: Record<string, unknown>; content?: Record<string, { schema?: Json }>; $ref?: string }
interface Operation {
  operationId?: string
  parameters?: Parameter[]
  requestBody?: { content: Record<string, { schema?: Json; example?: unknown; examples?: Record<string, unknown> }> }
  responses: Record<string, Response>
}
export interface OpenApiDocument {
  paths: Record<string, Record<string, Operation>>
  components?: { schemas?: Record<string, Json>; responses?: Record<string, Response> }
}

const METHODS = new Set(['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'])
/** A verb and a noun in camelCase: createProcessInstance, listDeliveries, getLiveness. */
const OPERATION_ID = /^(?:get|list|create|update|delete|copy|reorder|advance|cancel|retry|replay|recover|activate|deactivate|revoke)[A-Z][A-Za-z]+$/
/** String properties of these names hold a state, status or mode: a client must be able to switch on them. */
const ENUM_NAMES = new Set(['state', 'status', 'mode', 'outcome', 'source', 'event', 'kind', 'delivery', 'type'])
/** The probes, which the rate limits do not count (README, Limits), so that no 429 takes a process out. */
const PROBES = new Set(['GET /health/live', 'GET /health/ready'])
/** Free-text kinds that are not a closed set. */
const FREE_TEXT = new Set(['Activity.kind', 'Problem.type'])

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value)

function* operations(document: OpenApiDocument): Generator<[string, Operation]> {
  for (const [path, methods] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      if (METHODS.has(method)) yield [`${method.toUpperCase()} ${path}`, operation]
    }
  }
}

function resolve(document: OpenApiDocument, response: Response): Response {
  const name = response.$ref?.replace('#/components/responses/', '')
  return name === undefined ? response : document.components?.responses?.[name] ?? response
}

function versionedBody(document: OpenApiDocument, response: Response): boolean {
  const ref = response.content?.['application/json']?.schema?.$ref
  const schema = typeof ref === 'string' ? document.components?.schemas?.[ref.replace('#/components/schemas/', '')] : undefined
  return isObject(schema?.properties) && 'version' in schema.properties
}

function hasHeader(response: Response, name: string): boolean {
  return Object.keys(response.headers ?? {}).some((header) => header.toLowerCase() === name.toLowerCase())
}

function operationGaps(document: OpenApiDocument, name: string, operation: Operation): string[] {
  const gaps: string[] = []
  if (!operation.operationId) gaps.push(`${name}: no operationId`)
  else if (!OPERATION_ID.test(operation.operationId)) gaps.push(`${name}: operationId ${operation.operationId} is not a verb and a noun in camelCase`)
  for (const [media, body] of Object.entries(operation.requestBody?.content ?? {})) {
    if (body.example === undefined && body.examples === undefined) gaps.push(`${name}: the ${media} request body has no example`)
  }
  const ifMatch = operation.parameters?.find((p) => p.in === 'header' && p.name.toLowerCase() === 'if-match')
  if (ifMatch && typeof ifMatch.schema?.pattern !== 'string') gaps.push(`${name}: If-Match has no pattern`)
  for (const [status, declared] of Object.entries(operation.responses)) {
    const response = resolve(document, declared)
    const code = Number(status)
    if (code >= 200 && code < 300) {
      if (!response.description || response.description === 'Default Response') gaps.push(`${name}: ${status} has no description`)
      if (code === 201 && !hasHeader(response, 'Location')) gaps.push(`${name}: 201 does not declare Location`)
      if (versionedBody(document, response) && !hasHeader(response, 'ETag')) gaps.push(`${name}: ${status} answers a versioned resource without declaring ETag`)
    }
    if (code === 412 && !hasHeader(response, 'ETag')) gaps.push(`${name}: 412 does not declare the current ETag`)
    if ((code === 429 || code === 503) && !hasHeader(response, 'Retry-After')) gaps.push(`${name}: ${status} does not declare Retry-After`)
  }
  const etagOk = operation.responses['200'] === undefined ? undefined : resolve(document, operation.responses['200'])
  if (name.startsWith('GET ') && etagOk !== undefined && hasHeader(etagOk, 'ETag')) {
    const notModified = operation.responses['304'] === undefined ? undefined : resolve(document, operation.responses['304'])
    if (notModified === undefined || !hasHeader(notModified, 'ETag')) gaps.push(`${name}: answers an ETag without a 304 that declares it (If-None-Match)`)
  }
  const probe = PROBES.has(name)
  if (!probe && !operation.responses['429']) gaps.push(`${name}: no 429 (every route but the probes is rate-limited)`)
  if (probe && operation.responses['429']) gaps.push(`${name}: 429, which a probe never answers (the rate limits do not count it)`)
  return gaps
}

/** Shapes that generate `never | null` or `unknown` where a type was meant, or that validators read as refusing a null meant. */
function schemaGaps(where: string, schema: unknown): string[] {
  if (Array.isArray(schema)) return schema.flatMap((item, i) => schemaGaps(`${where}[${i}]`, item))
  if (!isObject(schema)) return []
  const gaps: string[] = []
  if (Array.isArray(schema.enum) && schema.enum.length === 1 && schema.enum[0] === null) gaps.push(`${where}: a null-only schema`)
  if (Array.isArray(schema.examples)) gaps.push(`${where}: examples, which an OpenAPI 3.0 schema does not take (example)`)
  for (const combinator of ['anyOf', 'oneOf', 'allOf'] as const) {
    const members = schema[combinator]
    if (combinator !== 'allOf' && Array.isArray(members) && members.length === 1) gaps.push(`${where}: ${combinator} of one member`)
  }
  // OpenAPI 3.0.3: nullable adds null to the type beside it, and to nothing else (not through allOf, anyOf or a $ref).
  if (schema.nullable === true && schema.type === undefined) gaps.push(`${where}: nullable without a type beside it, which takes no null`)
  for (const [key, value] of Object.entries(schema)) {
    if (key === 'example' || key === 'examples' || key === 'enum' || key === 'default') continue
    gaps.push(...schemaGaps(`${where}.${key}`, value))
  }
  return gaps
}

function enumGaps(document: OpenApiDocument): string[] {
  const gaps: string[] = []
  const visit = (where: string, schema: unknown): void => {
    if (!isObject(schema)) return
    for (const [name, property] of Object.entries(isObject(schema.properties) ? schema.properties : {})) {
      const qualified = `${where}.${name}`
      if (isObject(property) && property.type === 'string' && ENUM_NAMES.has(name) && !FREE_TEXT.has(qualified) && !Array.isArray(property.enum)) {
        gaps.push(`${qualified}: a ${name} typed as any string, not an enum`)
      }
      visit(qualified, property)
    }
  }
  for (const [name, schema] of Object.entries(document.components?.schemas ?? {})) visit(name, schema)
  return gaps
}

/** Everything the document lacks, one line each; empty when a generator gets what it needs. */
export function contractGaps(document: OpenApiDocument): string[] {
  const gaps: string[] = []
  const ids = new Map<string, string>()
  for (const [name, operation] of operations(document)) {
    gaps.push(...operationGaps(document, name, operation))
    const other = operation.operationId === undefined ? undefined : ids.get(operation.operationId)
    if (other) gaps.push(`${name}: operationId ${operation.operationId} is also ${other}'s`)
    if (operation.operationId) ids.set(operation.operationId, name)
  }
  gaps.push(...schemaGaps('components', document.components), ...schemaGaps('paths', document.paths), ...enumGaps(document))
  return gaps
}
