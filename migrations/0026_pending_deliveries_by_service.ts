import { sql, type Kysely } from '../src/db/kysely.js'

// Deleting or changing a service's trigger cancels its pending trigger deliveries that no trigger
// matches any more (cancelUnwantedDeliveries): this index holds those pending ones only, so the
// change never reads the service's finished deliveries (deliveries_service_idx holds them all). Its
// `service_id is not null` (a trigger's delivery always names its service) keeps the plans of statements
// that do not name a service, such as a record delete's (migration 0025), from taking it for theirs.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql.raw(`create index deliveries_pending_service_idx on deliveries (service_id) where status = 'pending' and source = 'trigger' and service_id is not null`).execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql.raw('drop index deliveries_pending_service_idx').execute(db)
}
