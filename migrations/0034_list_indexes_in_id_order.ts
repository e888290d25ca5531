import { sql, type Kysely } from '../src/db/kysely.js'

// A list is newest (processes) or oldest (records) first by id, a page at a time. The indexes a
// filter of a list finds its rows by ended with the filter's column: a page read all of the rows the
// filter matches and sorted them (a template's 400,000 processes: 2 s a page; a property's or an
// address's 10,000: 0.2 to 0.35 s; a maintainer's 30,000 records: 45 ms). With the id after the
// filter's column each page is read in order, and stops at its limit. The indexes hold the same
// rows as before, so a write adds no entry it did not add already.
const INDEXES = [
  ['process_instances_template_idx', 'process_instances (template_id, tenant_id, id)', 'process_instances (template_id, tenant_id)'],
  ['process_instances_property_idx', 'process_instances (tenant_id, property_id, id) where property_id is not null',
    'process_instances (tenant_id, property_id) where property_id is not null'],
  ['process_instances_address_idx', 'process_instances (tenant_id, address_id, id) where address_id is not null',
    'process_instances (tenant_id, address_id) where address_id is not null'],
  ['properties_maintainer_idx', 'properties (tenant_id, maintainer_user_id, id) where maintainer_user_id is not null',
    'properties (tenant_id, maintainer_user_id) where maintainer_user_id is not null'],
  ['addresses_maintainer_idx', 'addresses (tenant_id, maintainer_user_id, id) where maintainer_user_id is not null',
    'addresses (tenant_id, maintainer_user_id) where maintainer_user_id is not null']
] as const

// The drop needs the table's strongest lock: taken before the build, not after it. Built under the
// share lock first, the drop waited for a running process's transaction that had locked a row of the
// table and was itself waiting behind the build to write it: Postgres ended the migration as a deadlock
// (db:migrate failed, a start with it stopped), as a replaced index's build on a busy table does.
async function replace(db: Kysely<unknown>, name: string, definition: string): Promise<void> {
  await sql.raw(`lock table ${definition.slice(0, definition.indexOf(' '))} in access exclusive mode`).execute(db)
  await sql.raw(`create index ${name}_new on ${definition}`).execute(db)
  await sql.raw(`drop index ${name}`).execute(db)
  await sql.raw(`alter index ${name}_new rename to ${name}`).execute(db)
}

export async function up(db: Kysely<unknown>): Promise<void> {
  for (const [name, definition] of INDEXES) await replace(db, name, definition)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const [name, , before] of INDEXES) await replace(db, name, before)
}
