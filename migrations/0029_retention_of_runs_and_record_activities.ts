import { sql, type Kysely } from '../src/db/kysely.js'

// The retention chore (src/scheduler/remove-old-history.ts) also removes the activities of records
// that belong to no process (a trigger call's outcome and the like: the record's side of the trigger
// deliveries it removes) and the autostart runs that no occasion can look for again: a record's
// creation's and versions' runs by their age, a date's runs by their date, which a pass may look for
// until long after the run was made. Each is read through a partial index of its own, so the chore
// never walks the activities of processes nor the date runs it must keep. Date runs are ordered by
// their occurrence as bytes (`date:YYYY-MM-DD` sorts as the dates do) whatever the database's collation.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create index activities_unbound_created_idx on activities (created_at) where instance_id is null`.execute(db)
  await sql`create index autostart_runs_record_created_idx on autostart_runs (created_at) where occurrence not like 'date:%'`.execute(db)
  await sql`create index autostart_runs_date_idx on autostart_runs ((occurrence collate "C")) where occurrence like 'date:%'`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index autostart_runs_date_idx`.execute(db)
  await sql`drop index autostart_runs_record_created_idx`.execute(db)
  await sql`drop index activities_unbound_created_idx`.execute(db)
}
