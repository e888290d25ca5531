/**
 * Tenant API keys this process verified lately, by hash, so that a busy client's requests do not
 * each look its key up (one round trip to Postgres of the ~7 of a start). Only keys found valid are
 * kept; an unknown key is always looked up. Revocation: a key revoked or a tenant deleted through
 * this process is forgotten at once (its next request is answered 401); through another API
 * process, the key works here for at most `ttlMs` more. Measured with `npm run bench:api`.
 */
/** When a lookup began, and the forgets done by then. */
export interface Lookup {
  generation: number
  at: number
}

export class KnownKeys {
  private readonly keys = new Map<string, { tenantId: string; at: number }>()
  /** Moves on with each forget: a lookup that began before one is not remembered (it may have read the key before its revocation). */
  private forgets = 0

  /** `now`: a timer that only goes forward by default, so a step of the machine's clock does not stretch the ttl. */
  constructor(private readonly ttlMs = 2000, private readonly max = 10_000, private readonly now: () => number = () => performance.now()) {}

  tenantOf(hash: string): string | undefined {
    const known = this.keys.get(hash)
    if (known === undefined) return undefined
    // A time before the lookup's (a clock stepped back) ends it too: it kept a revoked key working as long as the step.
    const age = this.now() - known.at
    if (age >= 0 && age < this.ttlMs) return known.tenantId
    this.keys.delete(hash)
    return undefined
  }

  /** Taken before a lookup, and given to `remember` with its result. */
  startLookup(): Lookup {
    return { generation: this.forgets, at: this.now() }
  }

  /**
   * Counted from the lookup's start, not its end: a key read before its revocation elsewhere works
   * here for at most `ttlMs` after the revocation, however long the lookup took (a busy pool, a
   * blocked event loop).
   */
  remember(hash: string, tenantId: string, lookup: Lookup): void {
    if (this.ttlMs <= 0 || lookup.generation !== this.forgets) return
    this.keys.delete(hash)
    this.keys.set(hash, { tenantId, at: lookup.at })
    // A Map iterates in insertion order: the first key is the one remembered longest ago.
    if (this.keys.size > this.max) this.keys.delete(this.keys.keys().next().value!)
  }

  /** Forgets every key of the tenant: one of them was revoked, or the tenant deleted. */
  forgetTenant(tenantId: string): void {
    this.forgets++
    for (const [hash, known] of this.keys) if (known.tenantId === tenantId) this.keys.delete(hash)
  }
}
