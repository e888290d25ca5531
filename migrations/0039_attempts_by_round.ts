import { sql, type Kysely } from '../src/db/kysely.js'

// A delivery lists its latest attempts (ATTEMPTS_SHOWN), newest round first: replays and retries add
// rounds without end, and a list read every attempt of a delivery, so one replayed some thousand times
// cost the API its attempts' bodies in memory on each read. The index of a delivery's attempts by
// attempt number alone left Postgres to read and sort all of them for the latest few; by round and
// number it reads those alone. It replaces the old one, which nothing else read by its number.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create index delivery_attempts_round_idx on delivery_attempts (tenant_id, delivery_id, round, attempt_number)`.execute(db)
  await sql`drop index delivery_attempts_delivery_idx`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`create index delivery_attempts_delivery_idx on delivery_attempts (tenant_id, delivery_id, attempt_number)`.execute(db)
  await sql`drop index delivery_attempts_round_idx`.execute(db)
}
