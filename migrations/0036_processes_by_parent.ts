import { sql, type Kysely } from '../src/db/kysely.js'

// The list of a process's follow-ups (`parentId`) had no index: each page walked the tenant's
// processes from the newest until it had found them all (0.2 s with 500,000). Only a follow-up has a
// parent, so the index holds those alone and a process started otherwise writes no entry to it.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create index process_instances_parent_idx on process_instances (tenant_id, parent_instance_id, id)
    where parent_instance_id is not null`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index process_instances_parent_idx`.execute(db)
}
