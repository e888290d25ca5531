import { sql, type Kysely } from '../src/db/kysely.js'

// Finished data grows without bound; the retention chore (src/scheduler/remove-old-history.ts)
// removes it after BATON_RETENTION_DAYS, in batches, reading these partial indexes over finished
// rows only, so it never scans the open ones.
//
// The hot tables get per-table autovacuum and analyze thresholds: with the defaults (50 rows + 10 %
// of the table), a table of a million finished rows is analyzed again only after another 100,000
// changes, and a burst of new rows meets statistics that do not know them.
const HOT_TABLES = ['process_instances', 'instance_steps', 'deliveries', 'delivery_attempts', 'activities', 'outbox_mails']

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create index process_instances_finished_idx on process_instances (ended_at) where status <> 'running'`.execute(db)
  await sql`create index deliveries_trigger_finished_idx on deliveries (finished_at)
    where step_id is null and status in ('succeeded', 'failed', 'cancelled')`.execute(db)
  await sql`create index outbox_mails_sent_idx on outbox_mails (sent_at) where sent_at is not null`.execute(db)
  for (const table of HOT_TABLES) {
    await sql`alter table ${sql.table(table)} set (
      autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02,
      autovacuum_analyze_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000, autovacuum_analyze_threshold = 1000
    )`.execute(db)
  }
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const table of HOT_TABLES) {
    await sql`alter table ${sql.table(table)} reset (
      autovacuum_vacuum_scale_factor, autovacuum_vacuum_insert_scale_factor, autovacuum_analyze_scale_factor,
      autovacuum_vacuum_threshold, autovacuum_analyze_threshold
    )`.execute(db)
  }
  await sql`drop index outbox_mails_sent_idx`.execute(db)
  await sql`drop index deliveries_trigger_finished_idx`.execute(db)
  await sql`drop index process_instances_finished_idx`.execute(db)
}
