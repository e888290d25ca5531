import { sql, type Kysely } from '../src/db/kysely.js'

// The list of processes by status (and by its current step's state or assignee, which ask for running
// ones) had an index over running processes alone, which a prepared statement's kept plan cannot take
// (its status is a parameter), and none for ended ones: a page of a tenant's cancelled processes
// sorted all of them (0.75 s with 475,000 ended), the kept plan of a later page of running ones
// walked the tenant's history (90 ms). An index of (status, tenant_id, id) reads each status in id
// order, whatever the plan; it takes the place of the running processes' one. The status comes
// first: an index leading with tenant_id alone would serve a lookup by (tenant_id, id) as well as the
// primary key does on an empty table, and be taken for the foreign key checks (migration 0014). It costs one entry
// more than that one for each process that ends (the update that ends it changes a column an index
// names, so it adds an entry to each index already), and its size grows with the history.
// The drop's strongest lock is taken before the build, not after it (see 0034).
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`lock table process_instances in access exclusive mode`.execute(db)
  await sql`create index process_instances_status_idx on process_instances (status, tenant_id, id)`.execute(db)
  await sql`drop index process_instances_running_idx`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`create index process_instances_running_idx on process_instances (tenant_id, id) where status = 'running'`.execute(db)
  await sql`drop index process_instances_status_idx`.execute(db)
}
