import { sql, type Kysely } from '../src/db/kysely.js'

// A dateReached autostart remembers the last local date it has checked whole (every matching record
// has its run), so that days on which no worker ran are checked when one runs again
// (src/modules/autostart/service.ts, autostartOnDates). Set to the tenant's yesterday whenever the
// template is activated or begins watching other dates, so that it never starts for the days before
// it watched them; null on the templates of before this migration until the chore's first pass.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table process_templates add column dates_checked_through date`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table process_templates drop column dates_checked_through`.execute(db)
}
