import { sql } from './kysely.js'
import { identifier } from './statement.js'

/** A column of rows sent to a statement as JSON: its name (a key of the rows) and its SQL type. */
export type Column<Row> = readonly [name: keyof Row & string, type: string]

/**
 * Rows a statement writes or looks up, sent as one JSON array of tuples (each row's values in the
 * columns' order, a missing one as null), and read back as the table `alias(columns…)`:
 *
 *   rowsText(rows, columns)                      the JSON, for the statement's placeholder
 *   rowsTable('$1', columns, 'v')                the table, for its FROM
 *   rowsFrom(rows, columns, 'v')                 both, in a statement of Kysely's `sql` tag
 *
 * The batch statements of the scheduler and the API's writes sent objects and read them with
 * `jsonb_to_recordset`. Without the keys the JSON is about a quarter shorter, and Postgres reads an
 * outcome batch's activities (261 rows, 128 KB as objects) in 0.9 ms instead of 2.0 (100 runs each in
 * a DO block; docs/performance.md). The planner counts the rows of `jsonb_array_elements` as it
 * counts those of `jsonb_to_recordset` (100, with or without the values), so plans keep their shape.
 */
export function rowsText<Row extends object>(rows: readonly Row[], columns: readonly Column<Row>[]): string {
  return JSON.stringify(rows.map((row) => columns.map(([name]) => row[name] ?? null)))
}

export function rowsTable<Row>(placeholder: string, columns: readonly Column<Row>[], alias: string): string {
  return `(select ${tupleValues(columns)} from jsonb_array_elements(${placeholder}::jsonb) e) ${alias}`
}

export function rowsFrom<Row extends object>(rows: readonly Row[], columns: readonly Column<Row>[], alias: string) {
  return sql`(select ${sql.raw(tupleValues(columns))} from jsonb_array_elements(${rowsText(rows, columns)}::jsonb) e) ${sql.raw(alias)}`
}

/** The select list that names a tuple `e`'s values. */
function tupleValues<Row>(columns: readonly Column<Row>[]): string {
  return columns.map(([name, type], i) => `${valueAt(i, type)} as ${identifier(name)}`).join(', ')
}

/** The i-th value of a tuple as its type; a JSON null is SQL's null, also for jsonb. */
function valueAt(i: number, type: string): string {
  if (type === 'jsonb') return `nullif(e.value->${i}, 'null'::jsonb)`
  if (type === 'text') return `(e.value->>${i})`
  return `(e.value->>${i})::${type}`
}
