import { sql } from '../db/kysely.js'
import type { DB } from '../db/connect.js'

/** Locks the first free slot of the host on this session (see migrations/0005); the session's pid comes along. */
export async function lockHostSlot(db: DB, host: string, perHost: number, held: number[]): Promise<{ pid: number; slot: number | null }> {
  const { rows } = await sql<{ pid: number; slot: number | null }>`
    select pg_backend_pid() as pid, try_host_slot(${host}, ${perHost}, ${held}::integer[]) as slot
  `.execute(db)
  return rows[0]!
}

export async function unlockHostSlots(db: DB, slots: { host: string; number: number }[]): Promise<void> {
  await sql`
    select pg_advisory_unlock(hashtext(h), n) from unnest(${slots.map((s) => s.host)}::text[], ${slots.map((s) => s.number)}::integer[]) as u(h, n)
  `.execute(db)
}
