import { sql, type Kysely } from '../src/db/kysely.js'

// The first process of a chain (src/modules/instances/chain.ts) that a process belongs to: null for
// that first process itself (what a person, a person's record write or a date began), and the first
// process's id for every process a follow-up step or a process's write started below it. A chain
// starts at most so many processes below its first: a start counts those before it by this column,
// through a partial index over the processes that have one. Processes of before begin chains of their own.
// A trigger's delivery keeps the chain of the process whose write fired it, so that a process its
// provider's write-back starts stays in that chain (null for a delivery a person's write fired).
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table process_instances add column chain_root_id uuid`.execute(db)
  await sql`create index process_instances_chain_root_idx on process_instances (chain_root_id) where chain_root_id is not null`.execute(db)
  await sql`alter table deliveries add column chain_root_id uuid`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table deliveries drop column chain_root_id`.execute(db)
  await sql`drop index process_instances_chain_root_idx`.execute(db)
  await sql`alter table process_instances drop column chain_root_id`.execute(db)
}
