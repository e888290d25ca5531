import { badRequest } from '../errors.js'

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

export function pageRequest(query: { limit?: number | undefined; cursor?: string | undefined }): PageRequest {
  return { limit: query.limit ?? 50, after: query.cursor === undefined ? undefined : decodeCursor(query.cursor) }
}

/** Repositories fetch limit + 1 rows; the extra row only tells that another page exists. */
export function toPage<R extends { id: string }, T>(rows: R[], request: PageRequest, map: (row: R) => T): PageResult<T> {
  const hasMore = rows.length > request.limit
  const pageRows = hasMore ? rows.slice(0, request.limit) : rows
  const last = pageRows.at(-1)
  return { items: pageRows.map(map), nextCursor: hasMore && last ? encodeCursor(last.id) : null }
}

function encodeCursor(id: string): string {
  return Buffer.from(`v1:${id}`).toString('base64url')
}

function decodeCursor(cursor: string): string {
  const decoded = Buffer.from(cursor, 'base64url').toString()
  const id = decoded.startsWith('v1:') ? decoded.slice(3) : ''
  if (!UUID.test(id)) throw badRequest('The cursor is not one this service issued.', [{ pointer: '/querystring/cursor', detail: 'invalid cursor' }])
  return id
}
