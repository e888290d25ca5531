import { sql, type Kysely } from '../src/db/kysely.js'

// How many writers above a trigger's delivery set it off (src/modules/instances/chain.ts): one more
// than the process or the write-back that wrote the record, 0 for a person's write. A constant default
// adds the column without rewriting the table. A step's delivery keeps 0: its process's depth counts.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table deliveries add column chain_depth integer not null default 0`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table deliveries drop column chain_depth`.execute(db)
}
