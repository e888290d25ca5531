import { sql } from '../db/kysely.js'
import type { DB } from '../db/connect.js'

/** Locks the first free slot of the host on this session (see migrations/0005); the session's pid comes along. */
export async function lockHostSlot(db: DB, host: string, perHost: number, held: number[]): Promise<{ pid: number; slot: number | null }> {
  const { rows } = await sql<{ pid: number; slot: number | null }>`
    select pg_backend_pid() as pid, try_host_slot(${host}, ${perHost}, ${held}::integer[]) as slot
  `.execute(db)
  return rows[0]!
}

/**
 * Locks up to `count` free slots of the host on this session in one round trip (try_host_slot again
 * and again, each time skipping what the ones before took), fewer when the host has no more; the
 * session's pid comes along. A burst of calls to one host asked for its slots one round trip each,
 * one after another on the one session: 64 of them took 1.4 s with the database 20 ms away.
 */
export async function lockHostSlots(db: DB, host: string, perHost: number, held: number[], count: number): Promise<{ pid: number; slots: number[] }> {
  if (count === 1) {
    const { pid, slot } = await lockHostSlot(db, host, perHost, held)
    return { pid, slots: slot === null ? [] : [slot] }
  }
  const { rows } = await sql<{ pid: number; slots: number[] }>`
    with recursive taken(i, slot, held) as (
      select 1, s.slot, ${held}::integer[] || s.slot
      from try_host_slot(${host}, ${perHost}, ${held}::integer[]) as s(slot)
      union all
      select t.i + 1, s.slot, t.held || s.slot
      from taken t cross join lateral try_host_slot(${host}, ${perHost}, t.held) as s(slot)
      where t.slot is not null and t.i < ${count}
    )
    select pg_backend_pid() as pid, coalesce(array_agg(slot order by i) filter (where slot is not null), '{}') as slots from taken
  `.execute(db)
  return rows[0]!
}

/**
 * Gives back the slots of the host this session holds in the database besides `held`: a lockHostSlots
 * that failed partway (a statement timeout, a cancel, the lock table full) kept the locks its
 * try_host_slot calls had taken, as session-level locks outlive the statement; unknown to the worker,
 * they stayed locked for as long as its session lived, and no worker could use them.
 */
export async function unlockUntrackedHostSlots(db: DB, host: string, held: number[]): Promise<number> {
  const { rows } = await sql<{ unlocked: number }>`
    select count(pg_advisory_unlock(hashtext(${host}), l.objid::integer))::integer as unlocked from pg_locks l
    where l.locktype = 'advisory' and l.pid = pg_backend_pid() and l.granted and l.objsubid = 2
      and l.database = (select oid from pg_database where datname = current_database())
      and l.classid = hashtext(${host})::oid and l.objid::integer <> all (${held}::integer[])
  `.execute(db)
  return rows[0]!.unlocked
}

export async function unlockHostSlots(db: DB, slots: { host: string; number: number }[]): Promise<void> {
  await sql`
    select pg_advisory_unlock(hashtext(h), n) from unnest(${slots.map((s) => s.host)}::text[], ${slots.map((s) => s.number)}::integer[]) as u(h, n)
  `.execute(db)
}
