import { sql, type Kysely } from '../src/db/kysely.js'

// The delivery list filtered by an attempt's outcome (`retry`, `failed`, `aborted`) had no index by
// outcome: a page read all of the tenant's attempts of it and sorted their deliveries, or matched each
// delivery against all of them (0.1 to 0.8 s with 600,000 deliveries; 20 s on a kept plan without
// statistics). The index holds the attempts that did not succeed alone, in delivery order, so that
// listDeliveries reads a page of them one delivery after another (deliveriesByOutcome). An attempt is
// written once and never changed: one entry more per attempt that fails, none for one that succeeds.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create index delivery_attempts_outcome_idx on delivery_attempts (tenant_id, outcome, delivery_id) where outcome <> 'succeeded'`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index delivery_attempts_outcome_idx`.execute(db)
}
