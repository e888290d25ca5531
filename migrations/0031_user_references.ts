import { sql, type Kysely } from '../src/db/kysely.js'

// Deleting a user looks for the rows that still name it (findUserUsages), and each foreign key to
// users checks the rows that reference it. Processes and templates had no index on their
// responsible or controlling user, and steps one on their assignee for open steps only, which
// neither look-up can use (they ask for any state): each delete walked all of the tenant's
// processes and steps, 0.5 s with 200,000 processes of two steps, growing with every one. These
// indexes lead with the user, so a look-up by tenant alone never takes them (migration 0016); the
// assignee's index holds every assigned step in place of the open ones, and the steps still to
// start that name a user are a small index of their own. The open steps' index served /metrics too,
// whose counts of due, running and failed steps would then read the whole table: a small index of
// those steps by state takes its place there.
export async function up(db: Kysely<unknown>): Promise<void> {
  for (const statement of [
    'create index process_instances_responsible_idx on process_instances (responsible_user_id, tenant_id)',
    'create index process_instances_controller_idx on process_instances (controller_user_id, tenant_id)',
    'create index process_templates_controller_idx on process_templates (controller_user_id, tenant_id) where controller_user_id is not null',
    // The drop's strongest lock before the build, not after it (see 0034).
    'lock table instance_steps in access exclusive mode',
    'create index instance_steps_assignee_idx_new on instance_steps (assignee_user_id, tenant_id) where assignee_user_id is not null',
    'drop index instance_steps_assignee_idx',
    'alter index instance_steps_assignee_idx_new rename to instance_steps_assignee_idx',
    `create index instance_steps_responsible_idx on instance_steps (responsible_user_id, tenant_id)
      where responsible_user_id is not null and state in ('pending', 'waiting')`,
    `create index instance_steps_open_idx on instance_steps (state) where state in ('due', 'running', 'failed')`
  ]) await sql.raw(statement).execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const statement of [
    'drop index instance_steps_open_idx, instance_steps_responsible_idx',
    `create index instance_steps_assignee_idx_old on instance_steps (assignee_user_id, tenant_id)
      where state in ('waiting', 'due', 'running', 'failed')`,
    'drop index instance_steps_assignee_idx',
    'alter index instance_steps_assignee_idx_old rename to instance_steps_assignee_idx',
    'drop index process_templates_controller_idx, process_instances_controller_idx, process_instances_responsible_idx'
  ]) await sql.raw(statement).execute(db)
}
