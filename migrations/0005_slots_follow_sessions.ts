import { sql, type Kysely } from '../src/db/kysely.js'
import { up as createHostSlotsTable } from './0004_host_slots.js'

// A per-host call slot becomes a session-level advisory lock, (hashtext(host), slot number), held by
// the worker's own connection: Postgres drops it the moment that connection ends, so a worker killed
// with kill -9 gives its slots back at once instead of when a row would have expired. The unlogged
// host_slots table and its acquire function go.
//
// An attempt cut off before its outcome was known (a shutdown that ran out of grace, a lease that
// ran out) is logged as `aborted`.
const statements = [
  `drop function acquire_host_slot(text, integer, integer, text)`,
  `drop table host_slots`,
  // Tries slots 0 .. p_limit-1 in order, skipping those this session already holds (a session may
  // take one advisory lock twice, which would count one slot as two); null when all are taken.
  `create function try_host_slot(p_host text, p_limit integer, p_held integer[]) returns integer
   language plpgsql as $$
   begin
     for slot in 0 .. p_limit - 1 loop
       if slot <> all (p_held) then
         if pg_try_advisory_lock(hashtext(p_host), slot) then
           return slot;
         end if;
       end if;
     end loop;
     return null;
   end $$`,
  `alter table delivery_attempts drop constraint delivery_attempts_outcome_check`,
  `alter table delivery_attempts add constraint delivery_attempts_outcome_check
   check (outcome in ('succeeded', 'retry', 'failed', 'aborted'))`
]

export async function up(db: Kysely<unknown>): Promise<void> {
  for (const statement of statements) await sql.raw(statement).execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`update delivery_attempts set outcome = 'retry' where outcome = 'aborted'`.execute(db)
  await sql`alter table delivery_attempts drop constraint delivery_attempts_outcome_check`.execute(db)
  await sql`alter table delivery_attempts add constraint delivery_attempts_outcome_check check (outcome in ('succeeded', 'retry', 'failed'))`.execute(db)
  await sql`drop function try_host_slot(text, integer, integer[])`.execute(db)
  await createHostSlotsTable(db)
}
