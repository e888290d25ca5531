import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import type { FastifyReply } from 'fastify'
import { badRequest } from '../errors.js'
import { jsonBytes } from './json-limits.js'

/**
 * A list page's JSON body stays within this many bytes: the page ends early, with a nextCursor,
 * so that no page of large items (records of 256 KiB, deliveries with many attempts) can take
 * tens of MiB of memory per request. One item is always sent, however large.
 */
export const PAGE_MAX_BYTES = 4 * 1024 * 1024

export interface PageRequest {
  limit: number
  /** Return rows whose id sorts after this one. */
  after?: string | undefined
  /**
   * For a list ordered by position (a template's steps): the position the `after` row had when the
   * cursor was issued, where the page goes on should that row have been deleted since.
   */
  position?: number | undefined
  /**
   * For a list ordered by position: the row that came after the `after` row when the cursor was issued,
   * where the page goes on (from it) should the `after` row have been deleted since.
   */
  next?: string | undefined
  /** The list the page is of (listScope): the cursor to its next page names it. */
  list: string
}

export interface PageResult<T> {
  items: T[]
  nextCursor: string | null
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** What a page's JSON holds beside its items' text and commas: `{"items":[`, `],"nextCursor":` and the longest cursor (with a position and the next id). */
const PAGE_ENVELOPE_BYTES = jsonBytes({ items: [], nextCursor: encodeCursor(listScope('/', {}), '00000000-0000-0000-0000-000000000000', 999_999_999, '00000000-0000-0000-0000-000000000000') })

/** What pageRequest reads of a Fastify request to a list route. */
export interface ListRequest {
  query: { limit?: number | undefined; cursor?: string | undefined }
  routeOptions: { url?: string | undefined }
  params: unknown
  /** Who asks (plugins/auth.ts): a tenant's lists are not another tenant's, nor the operator's. */
  caller?: { kind: string; tenantId?: string } | null | undefined
}

/** The page a list route's request asks for; a cursor must be one this same list issued (listScope). */
export function pageRequest(request: ListRequest): PageRequest {
  const route = request.routeOptions.url ?? ''
  const list = listScope(route, request.params, callerScope(request.caller))
  const { cursor, limit } = request.query
  return { limit: limit ?? 50, ...(cursor === undefined ? {} : decodeCursor(cursor, list, listScope(route, request.params))), list }
}

/** Whose list it is: the tenant's (by its key or an apiClaim), or the operator's. */
function callerScope(caller: ListRequest['caller']): string | undefined {
  if (!caller) return undefined
  return caller.tenantId ?? caller.kind
}

/**
 * Which list a cursor belongs to: the route, its path parameters (the template whose steps, the
 * process whose activities) and the caller (the tenant whose users), hashed to a few characters. A
 * cursor only names the id to go on after, and ids of one list mean nothing in another: a templates
 * cursor given to the users list, one template's steps cursor to another's, or one tenant's users
 * cursor to another tenant, was read as a position there. Filters are not part of it: a list keeps
 * its order whatever it is filtered by, so a cursor still says where to go on.
 */
export function listScope(route: string, params: unknown, caller?: string): string {
  const values = Object.entries((params ?? {}) as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1))
  return createHash('sha256').update(JSON.stringify(caller === undefined ? [route, values] : [route, values, caller])).digest('base64url').slice(0, 12)
}

/** A repository that sized its rows itself: `more` says that it left rows out to keep the page's byte budget. */
export interface SizedRows<R> {
  rows: R[]
  more: boolean
}

/**
 * Repositories fetch limit + 1 rows; the extra row only tells that another page exists. The page also
 * ends once its items would pass PAGE_MAX_BYTES, measured here unless the repository sized the rows.
 */
export function toPage<R extends { id: string }, T>(rows: R[] | SizedRows<R>, request: PageRequest, map: (row: R) => T): PageResult<T> {
  if (!Array.isArray(rows)) {
    const last = rows.rows.at(-1)
    return { items: rows.rows.map(map), nextCursor: rows.more && last ? encodeCursor(request.list, last.id) : null }
  }
  const items: T[] = []
  let bytes = 0
  let last: R | undefined
  for (const row of rows.slice(0, request.limit)) {
    const item = map(row)
    bytes += jsonBytes(item) + 1
    if (items.length > 0 && bytes > PAGE_MAX_BYTES - PAGE_ENVELOPE_BYTES) break
    items.push(item)
    last = row
  }
  const hasMore = rows.length > items.length
  return { items, nextCursor: hasMore && last ? encodeCursor(request.list, last.id) : null }
}

/** Sends a body that is JSON text already, as it is produced (chunked), unserialized. */
export function sendJsonStream(reply: FastifyReply, body: AsyncIterable<string>): FastifyReply {
  return reply.type('application/json; charset=utf-8').send(Readable.from(body, { objectMode: false }))
}

/** How many of these rows, taken in order, fit in a page's byte budget (at least one); `bytes` is each row's size. */
export function countWithinBudget(sizes: number[], maxBytes = PAGE_MAX_BYTES): number {
  let total = 0
  for (let i = 0; i < sizes.length; i++) {
    total += sizes[i]!
    if (i > 0 && total > maxBytes) return i
  }
  return sizes.length
}

/**
 * A cursor: the list it belongs to and the id to go on after, as `v2:<list>:<id>` in base64url; in a
 * list ordered by position, `v2:<list>:<id>:<position>:<next id>` (PageRequest.position and next).
 */
export function encodeCursor(list: string, id: string, position?: number, next?: string): string {
  const place = position === undefined ? '' : `:${position}${next === undefined ? '' : `:${next}`}`
  return Buffer.from(`v2:${list}:${id}${place}`).toString('base64url')
}

/*
 * Cursors issued before they named their list (`v1:<id>`) are still read, as before, unchecked, and
 * those issued before their list named the caller (`formerList`) are checked without it: a client
 * paging while the service is upgraded goes on with its next page. A cursor lives as long as a client
 * pages through one list; drop each a release after the one that brought it.
 */
const LEGACY_CURSOR = /^v1:(?<id>.*)$/s
const CURSOR = /^v2:(?<list>[A-Za-z0-9_-]{12}):(?<id>[^:]*)(?::(?<position>[1-9][0-9]{0,8})(?::(?<next>[^:]*))?)?$/s

function decodeCursor(cursor: string, list: string, formerList: string): Pick<PageRequest, 'after' | 'position' | 'next'> {
  const decoded = Buffer.from(cursor, 'base64url').toString()
  const found: { id?: string; list?: string; position?: string; next?: string } | undefined = CURSOR.exec(decoded)?.groups ?? LEGACY_CURSOR.exec(decoded)?.groups
  const id = found?.id ?? ''
  if (!UUID.test(id) || (found?.next !== undefined && !UUID.test(found.next))) throw badRequest('The cursor is not one this service issued.', [{ pointer: '/querystring/cursor', detail: 'invalid cursor' }])
  if (found?.list !== undefined && found.list !== list && found.list !== formerList) {
    throw badRequest('The cursor does not belong to this list: it came from another list (or the same list of another parent, or of another tenant). '
      + 'Pass a nextCursor only to the list that returned it, as the caller it was returned to, or start again without a cursor.',
    [{ pointer: '/querystring/cursor', detail: 'cursor does not belong to this list' }])
  }
  return {
    after: id,
    ...(found?.position === undefined ? {} : { position: Number(found.position) }),
    ...(found?.next === undefined ? {} : { next: found.next })
  }
}
