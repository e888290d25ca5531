import { sql } from 'kysely'
import type { DB } from '../db/connect.js'

export interface HostLimit {
  /** Calls open at once to one host:port, across every worker on the database. */
  perHost: number
  /** How long a slot lives if its worker dies before freeing it (the lease). */
  ttlMs: number
  /** The longest one call may take (its timeout): a slot is reused only while it outlives that. */
  callMs: number
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

export async function releaseHostSlots(db: DB, slots: string[]): Promise<void> {
  if (slots.length > 0) await db.deleteFrom('host_slots').where('id', 'in', slots).execute()
}

export interface HostSlot {
  id: string
  /** By this worker's clock, with room for skew against the database's. */
  expiresAt: number
  idleSince: number
}

/** How long a freed slot stays with this worker for its next call to the same host. */
const LINGER_MS = 200
/** Room for the worker's clock to differ from the database's. */
const SKEW_MS = 5000

/**
 * The slots of one worker. A call hands its slot back here, and the worker's next call to that host
 * reuses it within LINGER_MS instead of two more round trips; idle slots are then freed in one
 * statement. Measured with `npm run bench:scheduler -- --steps 5000` (2 cores): a round trip to take
 * and one to free per call cost ~0.9 ms of Postgres CPU per step and 489-533 -> 291-338 steps/s;
 * with this pool, 314-322 -> 309-317 steps/s on the same (busier) machine, ~0.1 ms more per step.
 */
export class HostSlotPool {
  private readonly idle = new Map<string, HostSlot[]>()
  private timer: NodeJS.Timeout | undefined

  constructor(private readonly db: DB, private readonly limit: HostLimit, private readonly onError: (error: unknown) => void) {}

  async take(host: string): Promise<HostSlot | undefined> {
    const now = Date.now()
    const held = this.idle.get(host) ?? []
    for (let slot = held.pop(); slot; slot = held.pop()) {
      if (slot.expiresAt - now > this.limit.callMs + SKEW_MS) return slot
      this.free([slot.id])
    }
    const id = await acquireHostSlot(this.db, host, this.limit)
    return id === undefined ? undefined : { id, expiresAt: now + this.limit.ttlMs, idleSince: now }
  }

  give(host: string, slot: HostSlot): void {
    slot.idleSince = Date.now()
    const held = this.idle.get(host)
    if (held) held.push(slot)
    else this.idle.set(host, [slot])
    this.timer ??= setTimeout(() => this.sweep(), LINGER_MS).unref()
  }

  /** Frees every idle slot: the worker is stopping. */
  async close(): Promise<void> {
    clearTimeout(this.timer)
    this.timer = undefined
    const all = [...this.idle.values()].flat().map((s) => s.id)
    this.idle.clear()
    await releaseHostSlots(this.db, all).catch(this.onError)
  }

  private sweep(): void {
    this.timer = undefined
    const cutoff = Date.now() - LINGER_MS
    const stale: string[] = []
    for (const [host, slots] of this.idle) {
      const keep = slots.filter((s) => s.idleSince > cutoff)
      stale.push(...slots.filter((s) => s.idleSince <= cutoff).map((s) => s.id))
      if (keep.length > 0) this.idle.set(host, keep)
      else this.idle.delete(host)
    }
    this.free(stale)
    if (this.idle.size > 0) this.timer = setTimeout(() => this.sweep(), LINGER_MS).unref()
  }

  /** A slot that cannot be freed expires by itself. */
  private free(ids: string[]): void {
    releaseHostSlots(this.db, ids).catch(this.onError)
  }
}
