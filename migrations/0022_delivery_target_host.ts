import { sql, type Kysely } from '../src/db/kysely.js'

// A free target's delivery keeps the host:port its step's URL calls (the per-host limit's key,
// src/lib/host-key.ts), so that a worker can leave a full host's free targets out of its claims as it
// leaves out the host's services (src/scheduler/claim-deliveries.ts). Null for a service's delivery,
// whose service may move its URL. The deliveries of before get theirs when a worker first turns one
// away (releaseDelivery): filling them here would hold the table locked for as long as that took.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table deliveries add column target_host text`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table deliveries drop column target_host`.execute(db)
}
