export interface FieldError {
  /** JSON pointer into the request, e.g. `/body/parameters/mode`. */
  pointer: string
  detail: string
}

/** An error a client can act on; the problem plugin renders it as application/problem+json. */
export class ProblemError extends Error {
  override name = 'ProblemError'
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string,
    readonly errors?: FieldError[],
    readonly headers?: Record<string, string>
  ) {
    super(detail)
  }
}

export const badRequest = (detail: string, errors?: FieldError[]) =>
  new ProblemError(400, 'Bad Request', detail, errors)
export const unauthorized = (detail: string) =>
  new ProblemError(401, 'Unauthorized', detail, undefined, { 'www-authenticate': 'Bearer' })
export const forbidden = (detail: string) => new ProblemError(403, 'Forbidden', detail)
export const notFound = (what: string, id?: string) =>
  new ProblemError(404, 'Not Found', id === undefined ? `${what} not found.` : `${what} ${id} not found.`)
export const conflict = (detail: string) => new ProblemError(409, 'Conflict', detail)
/** A stale If-Match; `etag`, when known, is the current version's, sent back so a client can retry at once. */
export const preconditionFailed = (detail: string, etag?: string) =>
  new ProblemError(412, 'Precondition Failed', detail, undefined, etag === undefined ? undefined : { etag })
export const unprocessable = (detail: string, errors?: FieldError[]) =>
  new ProblemError(422, 'Unprocessable Content', detail, errors)
