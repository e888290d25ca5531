/**
 * Full hosts whose claim apart came back short lately (claimAndDispatch): each rests `restMs`, then
 * is forgotten. A worker finds ever more hosts short over weeks, tenants' free targets among them,
 * and most are never claimed apart again: kept until then, each stayed for good.
 */
export class RecentlyShort {
  /** When each host's claim came back short; a Map iterates in insertion order, so the oldest come first. */
  private readonly at = new Map<string, number>()

  /** `now`: a timer that only goes forward by default, so a step of the machine's clock does not stretch the rest. */
  constructor(private readonly restMs: number, private readonly now: () => number = () => performance.now()) {}

  resting(host: string): boolean {
    const at = this.at.get(host)
    return at !== undefined && this.now() - at < this.restMs
  }

  /** A claim apart for the host came back short (it read every due delivery of the host), or full. */
  claimed(host: string, short: boolean): void {
    this.at.delete(host)
    if (!short) return
    const now = this.now()
    this.at.set(host, now)
    for (const [old, at] of this.at) {
      if (now - at < this.restMs) break
      this.at.delete(old)
    }
  }

  /** Hosts kept: those found short within `restMs` of the last one. */
  get size(): number {
    return this.at.size
  }
}
