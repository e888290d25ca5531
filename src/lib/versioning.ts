import type { FastifyReply } from 'fastify'
import { badRequest, preconditionFailed } from '../errors.js'

/**
 * Reads `If-Match` as a resource version: `"3"`, `W/"3"` or `3`. Absent or `*` means "any version".
 * A malformed value is a 400, so a client never updates by accident.
 */
export function expectedVersion(ifMatch: string | undefined): number | undefined {
  if (ifMatch === undefined || ifMatch.trim() === '*') return undefined
  const match = /^\s*(?:W\/)?"?(\d{1,9})"?\s*$/.exec(ifMatch)
  if (!match?.[1]) throw badRequest('If-Match must be a version as returned in ETag, e.g. "3".', [{ pointer: '/headers/if-match', detail: 'not a version' }])
  return Number(match[1])
}

/** 412 unless the caller's expected version is the current one. */
export function checkVersion(expected: number | undefined, current: number, what: string): void {
  if (expected !== undefined && expected !== current) {
    throw preconditionFailed(`${what} is at version ${current}, not ${expected}: read it again and retry.`)
  }
}

export function setETag(reply: FastifyReply, version: number): void {
  void reply.header('etag', `"${version}"`)
}
