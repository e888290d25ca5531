import { sql } from './kysely.js'
import { CUSTOM_PLAN } from './postgres.js'
import type { Statement } from './statement.js'

/**
 * The rows' primary keys as a condition a statement can find them by, through the primary key with
 * both of its columns, whatever the statistics (a batch statement joins its values as a set-returning
 * function, which the planner takes for 100 rows).
 *
 * One row: `table.tenant_id = $1 and table.id = $2`, which any plan takes as the key. More rows:
 * `(table.tenant_id = $1 and table.id = any($2)) or …`, one group per tenant, in a statement that is
 * planned with its values on every run (CUSTOM_PLAN): a plan kept for a prepared statement counts
 * an array of unknown length as ten elements, and on a table without statistics it then probed by
 * tenant alone and filtered all of the tenant's rows by id (0.16 ms with 800 steps in the tenant,
 * growing with every one; test/db/foreign-key-plans.test.ts).
 */
export function byKeys(alias: string, rows: { tenant_id: string; id: string }[]) {
  const tenant = sql.ref(`${alias}.tenant_id`)
  const id = sql.ref(`${alias}.id`)
  const groups = byTenant(rows)
  if (groups.length === 0) return sql<boolean>`false`
  const [firstTenant, firstIds] = groups[0]!
  if (groups.length === 1 && firstIds.length === 1) return sql<boolean>`(${tenant} = ${firstTenant}::uuid and ${id} = ${firstIds[0]}::uuid)`
  const conditions = groups.map(([tenantId, ids]) => sql`(${tenant} = ${tenantId}::uuid and ${id} = any(${ids}::uuid[]))`)
  return sql<boolean>`(${sql.join(conditions, sql` or `)}) ${sql.raw(CUSTOM_PLAN)}`
}

/**
 * The keys as rows `k(tenant_id, id)`, in id order, each key once, for a statement that looks each
 * one up in a lateral subquery of its own, kept apart by `offset 0`:
 *
 *   select x.* from ${eachKey(refs)} cross join lateral (
 *     select * from table t where t.tenant_id = k.tenant_id and t.id = k.id offset 0) x
 *
 * Each lookup goes through the primary key with both columns, whatever the statistics: a planner
 * without them took `tenant_id = $1 and id = any($2)` (byKeys) for a walk of the tenant's rows once
 * the array held 8 to 100 ids, the fewer the smaller the table (test/db/foreign-key-plans.test.ts).
 * An update cannot look up its own target this way; joined to the rows it writes (`from
 * ${rowsTable(…)} v where t.tenant_id = v.tenant_id and t.id = v.id`, src/db/json-rows.ts), byKeys
 * serves it.
 *
 * The keys come as one JSON array, whose rows the planner counts as 100 however many there are, in
 * the plan it keeps for the prepared statement and in one made with the values alike: so after its
 * first five runs the statement runs on the kept plan. `unnest` of arrays is counted at their length
 * when planned with the values: for a batch of one key that plan looked ten times cheaper than the
 * kept one, and the statement was planned again on every run (at a steady 200 steps/s, an outcome
 * batch's settling spent 0.37 ms planning for 0.14 ms running).
 */
export function eachKey(refs: { tenant_id: string; id: string }[]) {
  const keys = [...new Map(refs.map((r) => [`${r.tenant_id}/${r.id}`, r])).values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  const rows = JSON.stringify(keys.map((k) => ({ tenant_id: k.tenant_id, id: k.id })))
  return sql`jsonb_to_recordset(${rows}::jsonb) as k(tenant_id uuid, id uuid)`
}

/** The same condition as `byKeys`, as text for a Statement (src/db/statement.ts). */
export function byKeysText(statement: Statement, alias: string, rows: { tenant_id: string; id: string }[]): string {
  const groups = byTenant(rows)
  if (groups.length === 0) return 'false'
  const [firstTenant, firstIds] = groups[0]!
  if (groups.length === 1 && firstIds.length === 1) {
    return `(${alias}.tenant_id = ${statement.value(firstTenant)}::uuid and ${alias}.id = ${statement.value(firstIds[0])}::uuid)`
  }
  const conditions = groups.map(([tenantId, ids]) => `(${alias}.tenant_id = ${statement.value(tenantId)}::uuid and ${alias}.id = any(${statement.value(ids)}::uuid[]))`)
  return `(${conditions.join(' or ')}) ${CUSTOM_PLAN}`
}

/** The rows' ids by tenant, each id once. */
function byTenant(rows: { tenant_id: string; id: string }[]): [string, string[]][] {
  const idsByTenant = new Map<string, Set<string>>()
  for (const row of rows) {
    let ids = idsByTenant.get(row.tenant_id)
    if (!ids) idsByTenant.set(row.tenant_id, (ids = new Set()))
    ids.add(row.id)
  }
  return [...idsByTenant].map(([tenantId, ids]) => [tenantId, [...ids]])
}
