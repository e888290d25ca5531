import { sql } from 'kysely'
import type { DB } from '../db/connect.js'

export interface HostLimit {
  /** Calls open at once to one host:port, across every worker on the database. */
  perHost: number
  /** How long a slot lives if its worker dies before freeing it. */
  ttlMs: number
  owner: string
}

/** The key the limit counts by: host:port, with the scheme's default port filled in. */
export function hostKey(webhookUrl: string): string | undefined {
  try {
    const url = new URL(webhookUrl)
    return `${url.hostname}:${url.port || (url.protocol === 'https:' ? '443' : '80')}`
  } catch {
    return undefined
  }
}

/** Takes a slot for one call to this host, or returns undefined when the host has none free. */
export async function acquireHostSlot(db: DB, host: string, limit: HostLimit): Promise<string | undefined> {
  const { rows } = await sql<{ slot: string | null }>`
    select acquire_host_slot(${host}, ${limit.perHost}, ${limit.ttlMs}, ${limit.owner}) as slot
  `.execute(db)
  return rows[0]?.slot ?? undefined
}

export async function releaseHostSlot(db: DB, slot: string): Promise<void> {
  await db.deleteFrom('host_slots').where('id', '=', slot).execute()
}
