import { sql, type Kysely } from '../src/db/kysely.js'

// The tenants being deleted, for the scheduler's claims and chores, which take none of their rows
// (src/scheduler/tenant-not-deleting.ts): each statement reads this index once, empty but during a
// deletion, and compares each row's tenant with what it found.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create index tenants_deleting_idx on tenants (id) where deleting_since is not null`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index tenants_deleting_idx`.execute(db)
}
