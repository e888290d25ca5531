import { sql, type Kysely } from '../src/db/kysely.js'

// Deleting a record cancels its trigger deliveries no worker has claimed (cancelTriggeredDeliveries):
// these indexes hold pending trigger deliveries only, so the delete never reads the finished ones, and
// a step's delivery, which names its process's records too, is never written into them.
export async function up(db: Kysely<unknown>): Promise<void> {
  for (const statement of [
    `create index deliveries_pending_property_idx on deliveries (property_id, tenant_id) where status = 'pending' and source = 'trigger' and property_id is not null`,
    `create index deliveries_pending_address_idx on deliveries (address_id, tenant_id) where status = 'pending' and source = 'trigger' and address_id is not null`
  ]) await sql.raw(statement).execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql.raw('drop index deliveries_pending_property_idx, deliveries_pending_address_idx').execute(db)
}
