import { hasKeyPrefix, sameHash } from '../../lib/keys.js'

/**
 * The operator key's hash in force. A key given in BATON_ADMIN_TOKEN is fixed; a generated one lives
 * in the database and is read again once the copy here is older than `ttlMs`, so a rotation
 * (`npm run admin:rotate-key`) takes effect in every running process within that time: the old key
 * stops working and the new one works, without a restart.
 */
export class OperatorKeyHash {
  private readAt: number
  private reading: Promise<string> | undefined

  constructor(
    private hash: string,
    private readonly reread: (() => Promise<string | undefined>) | undefined,
    private readonly now: () => number,
    private readonly ttlMs = 2000
  ) {
    this.readAt = now()
  }

  /**
   * Whether a bearer key (and its hash) is the operator's. Only a key that can be the generated one
   * (its prefix) waits for a read of the stored hash, so tenant keys never wait on it.
   */
  matches(key: string, hash: string): boolean | Promise<boolean> {
    if (this.reread && !hasKeyPrefix('operator', key)) return false
    const current = this.current()
    return typeof current === 'string' ? sameHash(hash, current) : current.then((stored) => sameHash(hash, stored))
  }

  /** The hash, from the copy here while it is fresh; a failed read fails the caller (and the next call reads again). */
  current(): string | Promise<string> {
    const age = this.now() - this.readAt
    // A clock set back counts as stale, not as fresh for that much longer.
    if (!this.reread || (age >= 0 && age < this.ttlMs)) return this.hash
    this.reading ??= this.read(this.reread)
    return this.reading
  }

  private async read(reread: () => Promise<string | undefined>): Promise<string> {
    try {
      const started = this.now()
      // No stored key (the row removed by hand) matches no key; the next start generates one.
      this.hash = (await reread()) ?? ''
      this.readAt = started
      return this.hash
    } finally {
      this.reading = undefined
    }
  }
}
