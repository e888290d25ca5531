import { sql, type Kysely } from '../src/db/kysely.js'

// When the operator's deletion of the tenant began (src/modules/tenants/repository.ts): set in a
// transaction of its own before the first of the tenant's rows goes, and never cleared. From then
// on its API keys answer as a deleted tenant's, and it starts no process, so that its deletion's
// parts are not undone by new rows while they go.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table tenants add column deleting_since timestamptz`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table tenants drop column deleting_since`.execute(db)
}
