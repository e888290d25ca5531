import type { FastifyReply } from 'fastify'
import { badRequest, preconditionFailed } from '../errors.js'

// One entity tag: a version as sent in ETag ("3"), weak (W/"3") or bare (3); quoted on both sides or neither.
const TAG = '(?:W/)?(?:"\\d{1,9}"|\\d{1,9})'
// Commas between tags; the empty list elements RFC 9110 5.6.1.2 asks a recipient to ignore included.
const COMMAS = '\\s*,(?:\\s*,)*\\s*'

/** What `If-Match` accepts: `*`, or a comma-separated list of tags (RFC 9110 13.1.1). Also in the OpenAPI document. */
export const IF_MATCH_PATTERN = `^\\s*(?:\\*|(?:,\\s*)*${TAG}(?:${COMMAS}${TAG})*(?:\\s*,)*)\\s*$`
const IF_MATCH = new RegExp(IF_MATCH_PATTERN)

/** The versions an `If-Match` names, any of which may be current; undefined: any version. */
export type ExpectedVersions = readonly number[] | undefined

/**
 * Reads `If-Match` as the resource versions it names. Absent or `*` means "any version".
 * A malformed value is a 400, so a client never updates by accident.
 */
export function expectedVersions(ifMatch: string | undefined): ExpectedVersions {
  if (ifMatch === undefined) return undefined
  if (!IF_MATCH.test(ifMatch)) {
    throw badRequest('If-Match must be * or versions as returned in ETag, e.g. "3" or "3", "4".', [{ pointer: '/headers/if-match', detail: 'not a list of versions' }])
  }
  // The pattern leaves no digits but the versions'.
  return ifMatch.match(/\d+/g)?.map(Number)
}

/**
 * Whether an `If-None-Match` names the entity tag `etag` (RFC 9110 13.1.2): `*` names any, a list names each
 * of its tags, compared weakly (`W/"3"` names `"3"`). It takes the forms If-Match does; a value that does not
 * parse names nothing, so the answer is the full 200: a wrong 304 would leave a client with a copy it believes current.
 */
export function noneMatchNames(ifNoneMatch: string, etag: string): boolean {
  if (!IF_MATCH.test(ifNoneMatch)) return false
  if (ifNoneMatch.trim() === '*') return true
  // The pattern leaves no digits but the versions'; compared as written, so "03" is not "3".
  const version = etag.replace(/^(?:W\/)?"|"$/g, '')
  return ifNoneMatch.match(/\d+/g)?.includes(version) ?? false
}

/** The ETag of a resource version. */
function etagOf(version: number): string {
  return `"${version}"`
}

/** 412 unless the current version is one the caller expects; the answer carries the current ETag. */
export function checkVersion(expected: ExpectedVersions, current: number, what: string): void {
  if (expected !== undefined && !expected.includes(current)) {
    throw preconditionFailed(`${what} is at version ${current}, not ${expected.join(' or ')}: read it again and retry.`, etagOf(current))
  }
}

export function setETag(reply: FastifyReply, version: number): void {
  void reply.header('etag', etagOf(version))
}
