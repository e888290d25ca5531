import { sql, type Kysely } from '../src/db/kysely.js'

// A start's Idempotency-Key is unique per tenant through a partial index over the keys given: the
// unique constraint it replaces also held an entry for every process started without one (all of
// them, in most installations), so each such start paid an index insertion for nothing, and the
// index grew with the history. The key leads, as in 0014, so that no index but the primary key begins
// with tenant_id alone (the index cannot serve a lookup by key anyway: its condition is not implied).
// A start names the condition in its `on conflict` (src/modules/instances/write-changes.ts).
export async function up(db: Kysely<unknown>): Promise<void> {
  for (const statement of [
    `create unique index process_instances_idempotency_key_idx on process_instances (idempotency_key, tenant_id)
      where idempotency_key is not null`,
    `alter table process_instances drop constraint process_instances_idempotency_key_key`
  ]) await sql.raw(statement).execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const statement of [
    `alter table process_instances add constraint process_instances_idempotency_key_key unique (idempotency_key, tenant_id)`,
    `drop index process_instances_idempotency_key_idx`
  ]) await sql.raw(statement).execute(db)
}
