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
}

export interface PageResult<T> {
  items: T[]
  nextCursor: string | null
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** What a page's JSON holds beside its items' text and commas: `{"items":[`, `],"nextCursor":` and the cursor. */
const PAGE_ENVELOPE_BYTES = jsonBytes({ items: [], nextCursor: encodeCursor('00000000-0000-0000-0000-000000000000') })

export function pageRequest(query: { limit?: number | undefined; cursor?: string | undefined }): PageRequest {
  return { limit: query.limit ?? 50, after: query.cursor === undefined ? undefined : decodeCursor(query.cursor) }
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
    return { items: rows.rows.map(map), nextCursor: rows.more && last ? encodeCursor(last.id) : null }
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
  return { items, nextCursor: hasMore && last ? encodeCursor(last.id) : null }
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

export function encodeCursor(id: string): string {
  return Buffer.from(`v1:${id}`).toString('base64url')
}

function decodeCursor(cursor: string): string {
  const decoded = Buffer.from(cursor, 'base64url').toString()
  const id = decoded.startsWith('v1:') ? decoded.slice(3) : ''
  if (!UUID.test(id)) throw badRequest('The cursor is not one this service issued.', [{ pointer: '/querystring/cursor', detail: 'invalid cursor' }])
  return id
}
