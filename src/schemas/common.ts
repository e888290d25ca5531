import { Type, type Static, type TSchema } from 'typebox'

export const Uuid = Type.String({ format: 'uuid' })
export const Timestamp = Type.String({ format: 'date-time' })

export const IdParamsSchema = Type.Object({ id: Uuid })

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
export type Problem = Static<typeof ProblemSchema>

export const ProblemRef = Type.Ref('Problem')

const problemDescriptions: Record<number, string> = {
  400: 'The request is malformed or fails its schema',
  401: 'The bearer key is missing, unknown or revoked',
  403: 'The key may not use this route',
  404: 'No such resource for this caller',
  409: 'The request conflicts with the current state',
  412: 'If-Match names a stale version',
  422: 'The request is well-formed but breaks a rule',
  503: 'Not ready to serve'
}

/** Response schemas for the given error statuses, each a Problem served as application/problem+json. */
export function problems(...statuses: number[]) {
  return Object.fromEntries(
    statuses.map((status) => [
      status,
      {
        description: problemDescriptions[status] ?? 'Problem',
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

export function Page<T extends TSchema>(item: T, description?: string) {
  return Type.Object(
    {
      items: Type.Array(item),
      nextCursor: Type.Union([Type.String(), Type.Null()], { description: 'Pass as cursor for the next page; null on the last page' })
    },
    description === undefined ? {} : { description }
  )
}

export const NoContent = Type.Null({ description: 'No content' })

export const IfMatchHeadersSchema = Type.Object({
  'if-match': Type.Optional(Type.String({ description: 'The version to update, as returned in ETag; stale → 412' }))
})
