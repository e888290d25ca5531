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

  /** The hash, from the copy here while it is fresh; a failed read fails the caller (and the next call reads again). */
  current(): string | Promise<string> {
    if (!this.reread || this.now() - this.readAt < this.ttlMs) return this.hash
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
