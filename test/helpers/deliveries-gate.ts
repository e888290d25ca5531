import pg from 'pg'
import type { Test } from 'tap'
import type { DB } from '../../src/db/connect.js'
import { sql } from '../../src/db/kysely.js'

/**
 * A gate on the statements that update `deliveries`, for tests of a race between two transactions: once
 * shut, each such statement waits, `before` or `after` it runs, for an advisory lock the test holds, until
 * `letThrough` opens it.
 */
export async function gateDeliveries(t: Test, db: DB, databaseUrl: string, when: 'before' | 'after') {
  const key = 4242
  await sql.raw(`
    create table test_gate (armed boolean not null);
    insert into test_gate values (false);
    create function test_gate_wait() returns trigger language plpgsql as $$
    begin
      if (select armed from test_gate) then perform pg_advisory_xact_lock_shared(${key}); end if;
      return null;
    end $$;
    create trigger test_gate ${when} update on deliveries for each statement execute function test_gate_wait();
  `).execute(db)
  const holder = new pg.Client({ connectionString: databaseUrl })
  await holder.connect()
  t.teardown(() => holder.end())
  const open = () => holder.query('select pg_advisory_unlock($1)', [key])
  return {
    async shut() {
      await holder.query('select pg_advisory_lock($1)', [key])
      await sql`update test_gate set armed = true`.execute(db)
    },
    /**
     * Runs `goBack` while `held` waits at the shut gate (later statements pass), opens the gate once `goBack`
     * has ended or waits itself for a lock `held` holds, and answers what `held` answers.
     */
    async letThrough<T>(held: Promise<T>, goBack: () => Promise<unknown>): Promise<T> {
      await sql`update test_gate set armed = false`.execute(db)
      let wentBack = false
      const back = goBack().then(() => { wentBack = true })
      while (!wentBack && await lockWaiters(db) < 2) await new Promise((resolve) => setTimeout(resolve, 5))
      await open()
      const answer = await held
      await back
      return answer
    }
  }
}

/** How many of the database's sessions wait for a lock (of the kind `event` names: `advisory`, `tuple`, …). */
export async function lockWaiters(db: DB, event?: string): Promise<number> {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
    where datname = current_database() and wait_event_type = 'Lock' and (${event ?? null}::text is null or wait_event = ${event ?? null})`.execute(db)
  return rows[0]!.n
}
