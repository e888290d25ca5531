import type { FastifyReply } from 'fastify'
import { badRequest, preconditionFailed } from '../errors.js'

/** What `If-Match` accepts: a version as sent in ETag (`"3"`), weak (`W/"3"`) or bare (`3`), or `*`. Also in the OpenAPI document. */
export const IF_MATCH_PATTERN = '^\\s*(?:\\*|(?:W/)?"?(\\d{1,9})"?)\\s*$'
const IF_MATCH = new RegExp(IF_MATCH_PATTERN)

/**
 * Reads `If-Match` as a resource version. Absent or `*` means "any version".
 * A malformed value is a 400, so a client never updates by accident.
 */
export function expectedVersion(ifMatch: string | undefined): number | undefined {
  if (ifMatch === undefined) return undefined
  const match = IF_MATCH.exec(ifMatch)
  if (!match) throw badRequest('If-Match must be a version as returned in ETag, e.g. "3".', [{ pointer: '/headers/if-match', detail: 'not a version' }])
  return match[1] === undefined ? undefined : Number(match[1])
}

/** The ETag of a resource version. */
export function etagOf(version: number): string {
  return `"${version}"`
}

/** 412 unless the caller's expected version is the current one; the answer carries the current ETag. */
export function checkVersion(expected: number | undefined, current: number, what: string): void {
  if (expected !== undefined && expected !== current) {
    throw preconditionFailed(`${what} is at version ${current}, not ${expected}: read it again and retry.`, etagOf(current))
  }
}

export function setETag(reply: FastifyReply, version: number): void {
  void reply.header('etag', etagOf(version))
}
