import { sql, type Kysely } from '../src/db/kysely.js'

// A user's e-mail address is unique in its tenant whatever its letters' case, and the API compares it
// lowered by JavaScript (`toLowerCase`), which lowers the I of an ASCII address to i. Postgres's
// `lower` follows the column's collation, the database's default: under a Turkish one (ICU `tr`)
// it lowered INFO@x.de to ınfo@x.de (a dotless ı), so INFO@x.de and info@x.de were both taken, and
// a search for info@x.de found the one alone. An address is ASCII (the API's format), which the C
// collation lowers as JavaScript does, in every database. Replaced under the table's strongest lock,
// taken before the build (see 0034).
const LOWERED_AS_ASCII = 'users (tenant_id, lower(email collate "C"))'
const LOWERED_BY_DEFAULT = 'users (tenant_id, lower(email))'

async function replace(db: Kysely<unknown>, definition: string): Promise<void> {
  await sql`lock table users in access exclusive mode`.execute(db)
  await sql.raw(`create unique index users_email_key_new on ${definition}`).execute(db)
  await sql`drop index users_email_key`.execute(db)
  await sql`alter index users_email_key_new rename to users_email_key`.execute(db)
}

export async function up(db: Kysely<unknown>): Promise<void> {
  await replace(db, LOWERED_AS_ASCII)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await replace(db, LOWERED_BY_DEFAULT)
}
