import type { DB } from '../../db/connect.js'
import { countWithinBudget } from '../../lib/pagination.js'
import { findRecordSlices, type RecordFilter, type RecordSliceRow } from './repository.js'
import type { RecordTable } from './schemas.js'

/** Bytes a record adds to a page beside its fields: id, maintainer, version, timestamps. */
export const RECORD_OVERHEAD_BYTES = 256
/** Fields loaded by one query of a page: small enough that its rows die young. */
const BATCH_BYTES = 256 * 1024

export interface SizedRecord {
  id: string
  fields_bytes: number
}

/**
 * A page of records as JSON text, written as it is read: the records in batches of about 256 KiB,
 * each record's fields copied in slices as Postgres printed them, never parsed. Parsed and printed
 * whole, a 4 MiB page was five copies held at once per request; streamed, a request holds about one
 * batch, so parallel pages do not add up. Measured (page-budget test, server under tsx): four
 * parallel pages of the largest records took RSS from 211 to at most 243 MiB; a stream of 80 such
 * pages peaks at 317 MiB, the freed slices waiting for V8's next full GC. Records deleted since the
 * page was sized are left out, and so are those that no longer match the filter. The first batch is read before the text is returned, so a database that
 * cannot serve it (a full pool, a statement timeout, a cut connection) answers 503, not a 200 whose body
 * breaks off: a page of at most one batch, most pages, is read whole before its status goes out.
 */
export async function recordPageJson(
  db: DB, table: RecordTable, tenantId: string, filter: RecordFilter, records: SizedRecord[], nextCursor: string | null
): Promise<AsyncIterable<string>> {
  const [first = [], ...rest] = batches(records)
  const read = (ids: string[]) => findRecordSlices(db, table, tenantId, ids, filter)
  return pageText(read, { rows: await read(first) }, rest, nextCursor)
}

/** The page's text: the first batch as read (let go once written), then each further batch as it is needed. */
async function* pageText(
  read: (ids: string[]) => Promise<RecordSliceRow[]>, firstBatch: { rows?: RecordSliceRow[] }, rest: string[][], nextCursor: string | null
): AsyncGenerator<string> {
  yield '{"items":['
  let first = true
  for (let i = 0; i <= rest.length; i++) {
    let current: string | undefined
    // A slice may end inside a character: the decoder keeps its first bytes for the next slice.
    let text = new TextDecoder()
    const rows = firstBatch.rows ?? await read(rest[i - 1]!)
    delete firstBatch.rows
    for (const row of rows) {
      if (row.id !== current) {
        if (current !== undefined) yield `${text.decode()}}`
        yield `${first ? '' : ','}${recordHead(row)}`
        current = row.id
        first = false
        text = new TextDecoder()
      }
      yield text.decode(row.slice, { stream: true })
    }
    if (current !== undefined) yield `${text.decode()}}`
  }
  yield `],"nextCursor":${JSON.stringify(nextCursor)}}`
}

/** A record up to its fields, which come last so that their slices can follow, then the closing brace. */
function recordHead(row: RecordSliceRow): string {
  const head = JSON.stringify({
    id: row.id, maintainerUserId: row.maintainer_user_id, version: row.version,
    createdAt: row.created_at.toISOString(), updatedAt: row.updated_at.toISOString()
  })
  return `${head.slice(0, -1)},"fields":`
}

function batches(records: SizedRecord[]): string[][] {
  const result: string[][] = []
  let rest = records
  while (rest.length > 0) {
    const count = countWithinBudget(rest.map((r) => r.fields_bytes), BATCH_BYTES)
    result.push(rest.slice(0, count).map((r) => r.id))
    rest = rest.slice(count)
  }
  return result
}
