import { sql, type Kysely } from '../src/db/kysely.js'

// Keys Baton signs with and checks itself, shared by every process on the database: the apiClaim key
// is made by the first process that needs it, unless BATON_CLAIM_SECRET supplies one.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table signing_keys (
      name text primary key,
      secret bytea not null,
      created_at timestamptz not null default now()
    )
  `.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table signing_keys`.execute(db)
}
