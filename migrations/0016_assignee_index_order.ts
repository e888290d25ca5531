import { sql, type Kysely } from '../src/db/kysely.js'

// A claim turns its steps running (`where tenant_id = $1 and id = $2 and state = 'due'`). The open
// steps' index by assignee began with tenant_id, and the condition on the state lets a plan use it:
// made without statistics, that plan cost the same as the primary key's and won, so each claimed
// step walked the tenant's open steps until it met its own. With the assignee first, the index is
// of no use to a lookup by tenant alone, and a lookup by both `tenant_id` and `assignee_user_id`
// still finds it (test/db/foreign-key-plans.test.ts checks the claim's plan).
export async function up(db: Kysely<unknown>): Promise<void> {
  for (const statement of [
    `create index instance_steps_assignee_idx_new on instance_steps (assignee_user_id, tenant_id)
      where state in ('waiting', 'due', 'running', 'failed')`,
    `drop index instance_steps_assignee_idx`,
    `alter index instance_steps_assignee_idx_new rename to instance_steps_assignee_idx`
  ]) await sql.raw(statement).execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const statement of [
    `create index instance_steps_assignee_idx_old on instance_steps (tenant_id, assignee_user_id)
      where state in ('waiting', 'due', 'running', 'failed')`,
    `drop index instance_steps_assignee_idx`,
    `alter index instance_steps_assignee_idx_old rename to instance_steps_assignee_idx`
  ]) await sql.raw(statement).execute(db)
}
