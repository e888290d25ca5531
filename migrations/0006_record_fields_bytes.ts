import { sql, type Kysely } from '../src/db/kysely.js'

// The size of each record's fields as JSON text, kept by Postgres on every write, so that a list page
// can stop at its byte budget before it loads the records. Computing it per list instead took
// 640 ms for a page of 201 records of 256 KiB each (the fields are detoasted and printed).
export async function up(db: Kysely<unknown>): Promise<void> {
  for (const table of ['properties', 'addresses']) {
    await sql`alter table ${sql.table(table)} add column fields_bytes integer generated always as (octet_length(fields::text)) stored`.execute(db)
  }
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const table of ['properties', 'addresses']) {
    await sql`alter table ${sql.table(table)} drop column fields_bytes`.execute(db)
  }
}
