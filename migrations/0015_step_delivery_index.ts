import { sql, type Kysely } from '../src/db/kysely.js'

// A step's latest delivery (`where tenant_id = $1 and step_id = $2 order by id desc limit 1`, read with
// every process a read or an advance answers with) was looked up through the primary key backwards,
// filtering all of the tenant's deliveries by step, whenever the plan was made without statistics:
// the step index had no id to give the order. With the id in it, the lookup is its own index's, and
// the index is smaller than the key, so it wins on an empty table too (test/db/foreign-key-plans.test.ts).
export async function up(db: Kysely<unknown>): Promise<void> {
  for (const statement of [
    `create index deliveries_step_idx_new on deliveries (tenant_id, step_id, id) where step_id is not null`,
    `drop index deliveries_step_idx`,
    `alter index deliveries_step_idx_new rename to deliveries_step_idx`
  ]) await sql.raw(statement).execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const statement of [
    `create index deliveries_step_idx_old on deliveries (tenant_id, step_id) where step_id is not null`,
    `drop index deliveries_step_idx`,
    `alter index deliveries_step_idx_old rename to deliveries_step_idx`
  ]) await sql.raw(statement).execute(db)
}
