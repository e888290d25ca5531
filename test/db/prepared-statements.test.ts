// A pooled connection keeps its named prepared statements as long as it lives, each with its parse
// and plans in the server's memory: what it keeps is bounded in count, in size each and in all.
import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { createTestDatabase } from '../helpers/database.js'

// One connection: every statement below runs on it, and so does the look at what it keeps.
const database = await createTestDatabase({ poolMax: 1 })
t.teardown(() => database.drop())

/** A statement of `rows` rows of twenty values, some 250 characters a row (a copy's insert of steps takes some 150 a step). */
async function rowsOf(rows: number, tag: string): Promise<number> {
  const values = Array.from({ length: rows }, (_, r) => sql`(${sql.join(Array.from({ length: 20 }, (_, c) => sql`${`${r}:${c}`}::text`))})`)
  const { rows: [row] } = await sql<{ n: number }>`select count(*)::int as n from (values ${sql.join(values)}) as ${sql.raw(tag)}`.execute(database.db)
  return row!.n
}

async function kept(): Promise<{ statements: number; chars: number; longest: number }> {
  const { rows: [row] } = await sql<{ statements: number; chars: number; longest: number }>`
    select count(*)::int as statements, coalesce(sum(length(statement)), 0)::int as chars, coalesce(max(length(statement)), 0)::int as longest
    from pg_prepared_statements`.execute(database.db)
  return row!
}

t.test('statements of every length from one to 150 rows: the long ones run unprepared, the short ones stay prepared', async (t) => {
  for (let rows = 1; rows <= 150; rows++) t.equal(await rowsOf(rows, 'a'), rows, `${rows} rows`, { diagnostic: false })
  const after = await kept()
  t.ok(after.longest <= 16 * 1024, `the longest kept is ${after.longest} characters`)
  t.ok(after.chars <= 1024 * 1024, `${after.chars} characters kept in all`)
  t.ok(after.statements >= 50, `the short ones are kept prepared (${after.statements})`)
})

t.test('many distinct statements just under the length cap: no more than a MiB of them is kept', async (t) => {
  for (let i = 0; i < 100; i++) await rowsOf(60, `b${i}`)
  const after = await kept()
  t.ok(after.chars <= 1024 * 1024, `${after.chars} characters kept in all, in ${after.statements} statements`)
})
