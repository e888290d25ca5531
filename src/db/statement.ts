import { CompiledQuery, type QueryResult } from './kysely.js'
import type { DB } from './connect.js'
import { TOGETHER, type StatementText } from './postgres.js'

/**
 * A statement's text and its values, written as a string: for the statements a request or a step runs
 * every time, whose shape Kysely's builder and `sql` tag would otherwise put together as nodes and
 * compile again on each run (`npm run bench:api`). A value goes in as a placeholder, never as text.
 */
export class Statement {
  readonly values: unknown[] = []

  /** The placeholder of a value ($1, $2…). */
  value(value: unknown): string {
    this.values.push(value)
    return `$${this.values.length}`
  }

  run<Row>(db: DB, text: string): Promise<QueryResult<Row>> {
    return runText<Row>(db, text, this.values)
  }
}

/** Runs a statement's text as it is, with its values: a constant built once, or a Statement's. */
export function runText<Row>(db: DB, text: string, values: unknown[]): Promise<QueryResult<Row>> {
  return db.executeQuery<Row>(CompiledQuery.raw(text, values))
}

/** A column or table name, quoted. Only for names the code chose, such as a row's own columns. */
export function identifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`
}

/**
 * Runs statements of one transaction in order, sent together in one round trip where the database
 * is the pool's Postgres (src/db/postgres.ts, TOGETHER): each starts after the one before it has
 * finished, so in READ COMMITTED a statement after a lock reads what the lock's holder before it
 * committed. Should one fail, those after it do not run, and the call fails with its error. Only
 * inside a transaction (the pool refuses them outside one), and only the last may carry THEN_COMMIT.
 * The embedded database runs them one at a time (src/db/connect.ts). Answers each statement's rows.
 */
export async function runTogether(db: DB, statements: readonly StatementText[]): Promise<unknown[][]> {
  const { rows } = await db.executeQuery<unknown[]>(CompiledQuery.raw(TOGETHER, [...statements]))
  return rows
}
