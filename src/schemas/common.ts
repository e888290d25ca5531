import { Type, type TSchema, type TSchemaOptions } from 'typebox'

export const Uuid = Type.String({ format: 'uuid' })
export const Timestamp = Type.String({ format: 'date-time' })

export const IdParamsSchema = Type.Object({ id: Uuid })

/** An optional Idempotency-Key request header (printable ASCII, 1–200 characters), saying what a retry with it does. */
export function IdempotencyKeyHeader(description: string) {
  return Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '^[\\x21-\\x7e]+$', description }))
}

/** An enum of strings that also says `type: string`: serialized as a plain string, and a real enum to OpenAPI clients. */
export function StringEnum<const T extends string>(values: readonly T[], options: TSchemaOptions = {}) {
  return Type.Enum(values, { type: 'string', ...options })
}

/** The response headers Baton sends, as the OpenAPI document declares them. */
const RESPONSE_HEADERS = {
  ETag: { type: 'string', pattern: '^"\\d+"$', description: 'The resource\'s version, e.g. "3": send it back as If-Match to update' },
  Location: { type: 'string', description: 'The path of the created resource' },
  'Idempotent-Replayed': { type: 'string', enum: ['true'], description: 'Sent when the answer replays an earlier request with the same Idempotency-Key' },
  'Retry-After': { type: 'integer', minimum: 1, description: 'Seconds to wait before trying again' }
} as const
type ResponseHeader = keyof typeof RESPONSE_HEADERS

function declaredHeaders(names: readonly ResponseHeader[], descriptions: Partial<Record<ResponseHeader, string>> = {}) {
  if (names.length === 0) return {}
  return { headers: Object.fromEntries(names.map((name) => [name, { ...RESPONSE_HEADERS[name], description: descriptions[name] ?? RESPONSE_HEADERS[name].description }])) }
}

/**
 * A success response: its JSON schema, what it means and the headers it carries. Fastify serializes it by its
 * content type; typed as the schema so routes keep their reply types.
 */
export function ok<T extends TSchema>(schema: T, description: string, headers: readonly ResponseHeader[] = []): T {
  return { description, ...declaredHeaders(headers), content: { 'application/json': { schema } } } as unknown as T
}

/** A 204 answer and what it means. */
export function noContent(description: string) {
  return Type.Null({ description })
}

export const FieldErrorSchema = Type.Object(
  {
    pointer: Type.String({ description: 'JSON pointer into the request, e.g. /body/name' }),
    detail: Type.String()
  },
  { $id: 'FieldError' }
)

export const ProblemSchema = Type.Object(
  {
    type: Type.String({ description: 'A URI reference naming the problem type' }),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    instance: Type.Optional(Type.String()),
    errors: Type.Optional(Type.Array(Type.Ref('FieldError'))),
    requestId: Type.Optional(Type.String({ description: 'The request\'s X-Request-Id (the one sent, or one Baton made): quote it to an operator' }))
  },
  { $id: 'Problem', description: 'RFC 9457 problem details' }
)

const problemDescriptions: Record<number, string> = {
  400: 'The request is malformed or fails its schema',
  401: 'The bearer key is missing, unknown or revoked',
  403: 'The key may not use this route',
  404: 'No such resource for this caller',
  409: 'The request conflicts with the current state',
  412: 'If-Match names a stale version',
  422: 'The request is well-formed but breaks a rule',
  429: 'Too many requests from this key or address; Retry-After says when to try again',
  503: 'Not ready to serve, or the database did not answer; Retry-After says when to try again'
}

// A 412 carries the current version, so a client can retry without reading again; 429 and 503 say when to come back.
const problemHeaders: Record<number, ResponseHeader[]> = { 412: ['ETag'], 429: ['Retry-After'], 503: ['Retry-After'] }

/** Response schemas for the given error statuses, each a Problem served as application/problem+json. */
export function problems(...statuses: number[]) {
  return Object.fromEntries(
    statuses.map((status) => [
      status,
      {
        description: problemDescriptions[status] ?? 'Problem',
        ...declaredHeaders(problemHeaders[status] ?? [], { ETag: 'The current version, e.g. "4": retry with it as If-Match' }),
        content: { 'application/problem+json': { schema: Type.Ref('Problem') } }
      }
    ])
  ) as Record<number, TSchema>
}

export const PageQuerySchema = Type.Object({
  limit: Type.Optional(Type.Integer({
    minimum: 1, maximum: 200, default: 50, description: 'Page size (max 200); a page also ends early, with a nextCursor, before its body passes 4 MiB'
  })),
  cursor: Type.Optional(Type.String({ maxLength: 200, description: 'Opaque cursor from the previous page\'s nextCursor' }))
})

export function Page<T extends TSchema>(item: T) {
  return Type.Object({
    items: Type.Array(item),
    nextCursor: Type.Union([Type.String(), Type.Null()], { description: 'Pass as cursor for the next page; null on the last page' })
  })
}

// The pattern is checked by expectedVersions (lib/versioning.ts), which says what is wrong in its own words;
// the OpenAPI document declares the same pattern (plugins/openapi-document.ts).
export const IfMatchHeadersSchema = Type.Object({
  'if-match': Type.Optional(Type.String({ description: 'The version to update, as returned in ETag ("3", W/"3"), a list of versions any of which may be current ("3", "4") or *; stale → 412 with the current ETag' }))
})

/** If-Match of a change made through a template that is not an update of it: a step insert, a copy. */
export const TemplateIfMatchHeadersSchema = Type.Object({
  'if-match': Type.Optional(Type.String({ description: 'The template\'s version, as its ETag ("3", W/"3"; any change to it or to one of its steps moves it on), a list of versions any of which may be current ("3", "4") or *; stale → 412 with the template\'s current ETag' }))
})
