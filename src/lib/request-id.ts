import { randomUUID } from 'node:crypto'

export const REQUEST_ID_HEADER = 'x-request-id'

/** Visible ASCII, 1 to 128 characters: enough for a UUID, a ULID or a tracing id, and safe to log and echo. */
const ACCEPTED = /^[\x21-\x7e]{1,128}$/

/** The client's X-Request-Id when it is one we can echo and log safely; a new UUID otherwise. */
export function requestIdFrom(header: string | string[] | undefined): string {
  return typeof header === 'string' && ACCEPTED.test(header) ? header : randomUUID()
}
