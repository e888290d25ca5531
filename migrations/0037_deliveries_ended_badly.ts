import { sql, type Kysely } from '../src/db/kysely.js'

// The delivery list filtered by `failed` or `cancelled` (what a tenant looks for to replay or to
// explain) walked the tenant's deliveries from the newest until it had found a page, through all of
// them when there are few (0.15 to 0.35 s with 600,000). These are the deliveries that end badly, few
// beside the ones that succeed: the index holds them alone, so a delivery writes an entry only when
// it ends failed or cancelled (a succeeded one, and every pending or running state, write none).
// The list names these two statuses as literals, so that a kept plan may take it (listDeliveries).
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create index deliveries_ended_badly_idx on deliveries (tenant_id, status, id) where status in ('failed', 'cancelled')`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index deliveries_ended_badly_idx`.execute(db)
}
