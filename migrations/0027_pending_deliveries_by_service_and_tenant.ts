import { sql, type Kysely } from '../src/db/kysely.js'

// A tenant's deactivation of a service cancels that tenant's pending trigger deliveries of it
// (cancelWithdrawnDeliveries). On migration 0026's index, of the service alone, it read every tenant's
// backlog of the service (a provider's outage queues many) while it held the activation's lock; with the
// tenant in the key it reads its own. A trigger's change still finds the whole service's by the first column.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql.raw(`create index deliveries_pending_service_tenant_idx on deliveries (service_id, tenant_id) where status = 'pending' and source = 'trigger' and service_id is not null`).execute(db)
  await sql.raw('drop index deliveries_pending_service_idx').execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql.raw(`create index deliveries_pending_service_idx on deliveries (service_id) where status = 'pending' and source = 'trigger' and service_id is not null`).execute(db)
  await sql.raw('drop index deliveries_pending_service_tenant_idx').execute(db)
}
