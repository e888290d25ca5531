import { sql } from './kysely.js'

const unique = (values: string[]) => [...new Set(values)]

/**
 * `table.tenant_id = any(…) and table.id = any(…)` for these rows. A batch statement joins its
 * values as a set-returning function, which the planner takes for 100 rows; these conditions make
 * it fetch the target rows by primary key instead of scanning the table, whatever the statistics.
 */
export function byKeys(alias: string, rows: { tenant_id: string; id: string }[]) {
  return sql`${sql.ref(`${alias}.tenant_id`)} = any(${unique(rows.map((r) => r.tenant_id))}::uuid[])
    and ${sql.ref(`${alias}.id`)} = any(${unique(rows.map((r) => r.id))}::uuid[])`
}
