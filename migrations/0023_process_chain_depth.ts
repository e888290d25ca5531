import { sql, type Kysely } from '../src/db/kysely.js'

// How many processes above a process started it (src/modules/instances/chain.ts): its follow-up
// parent's depth plus one, or, for an autostart fired by a process's writeValues step, that process's
// depth plus one; 0 for a start by a person, a person's record write or a date. A constant default
// adds the column without rewriting the table; processes of before count from 0.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table process_instances add column chain_depth integer not null default 0`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table process_instances drop column chain_depth`.execute(db)
}
