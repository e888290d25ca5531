import { sql, type Kysely } from '../src/db/kysely.js'

// The work triggers of 0002 stay silent on a connection that says `baton.notify = off`: a process that
// only serves the API opens its connections so and announces its work itself after commit, coalesced
// (src/db/wakeups.ts). A transaction that NOTIFYs holds a database-wide lock from before its commit
// until the commit's WAL flush, so concurrent notifying commits run one after another instead of
// sharing a flush. Every other writer (a scheduler, a script, psql) still notifies as before.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create or replace function baton_notify_work() returns trigger language plpgsql as $$
    begin
      if current_setting('baton.notify', true) is distinct from 'off' then
        perform pg_notify('baton_work', tg_table_name);
      end if;
      return null;
    end $$`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    create or replace function baton_notify_work() returns trigger language plpgsql as $$
    begin
      perform pg_notify('baton_work', tg_table_name);
      return null;
    end $$`.execute(db)
}
