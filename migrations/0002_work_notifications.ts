import { sql, type Kysely } from '../src/db/kysely.js'

// Schedulers LISTEN on `baton_work`: a delivery queued, a step that became waiting or due, or a mail
// queued wakes them at once instead of after a poll interval. The WHEN clauses keep a scheduler's
// own claims quiet, and Postgres folds equal notifications within one transaction into one.
const statements = [
  `create function baton_notify_work() returns trigger language plpgsql as $$
   begin
     perform pg_notify('baton_work', tg_table_name);
     return null;
   end $$`,
  `create trigger deliveries_notify_work after insert or update of status, next_attempt_at on deliveries
   for each row when (new.status = 'pending') execute function baton_notify_work()`,
  `create trigger instance_steps_notify_work after insert or update of state, start_at on instance_steps
   for each row when (new.state in ('waiting', 'due')) execute function baton_notify_work()`,
  `create trigger outbox_mails_notify_work after insert on outbox_mails
   for each statement execute function baton_notify_work()`
]

export async function up(db: Kysely<unknown>): Promise<void> {
  for (const statement of statements) await sql.raw(statement).execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop trigger outbox_mails_notify_work on outbox_mails`.execute(db)
  await sql`drop trigger instance_steps_notify_work on instance_steps`.execute(db)
  await sql`drop trigger deliveries_notify_work on deliveries`.execute(db)
  await sql`drop function baton_notify_work()`.execute(db)
}
