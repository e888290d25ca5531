import { sql, type Kysely } from '../src/db/kysely.js'

// A record created with an Idempotency-Key keeps it, with a digest of what the request asked for: a
// retried create finds the record and answers with it instead of making a second one (and firing its
// triggers and autostarts again); the same key with another request is refused. The unique indexes
// hold only the keyed records, so records created without a key cost them nothing.
const TABLES = ['properties', 'addresses'] as const

export async function up(db: Kysely<unknown>): Promise<void> {
  for (const table of TABLES) {
    await sql`alter table ${sql.table(table)} add column idempotency_key text, add column idempotency_digest text`.execute(db)
    await sql`create unique index ${sql.id(`${table}_idempotency_key_idx`)} on ${sql.table(table)} (tenant_id, idempotency_key)
      where idempotency_key is not null`.execute(db)
  }
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const table of TABLES) {
    await sql`alter table ${sql.table(table)} drop column idempotency_key, drop column idempotency_digest`.execute(db)
  }
}
