import type { Clock } from '../adapters/clock.js'
import type { Logger } from '../lib/logger.js'

/**
 * How long a call that could not open its connection for a shortage of this machine's waits before it
 * is claimed again: about as long as the scheduler waits out a database that is away (DATABASE_BACKOFF),
 * so a raised limit is noticed within seconds, while a worker still short claims each call only every
 * few seconds.
 */
export const LOCAL_SHORTAGE_WAIT_MS = 2000
/** A shortage is logged at most this often, with how many calls waited meanwhile; so is its end. */
const RELOG_MS = 60_000

/**
 * The worker's log of its machine's shortages (file descriptors, kernel buffers): a line when calls
 * begin to fail for one and one when a call opens its connection again, each at most once a minute,
 * never a line per call (a burst of 60 calls past the limit wrote 48 "webhook call" lines, each an attempt).
 */
export interface LocalShortages {
  /** A call could not open its connection: it goes back uncounted and waits `waitMs`. */
  short(shortOf: string, code: string, waitMs: number): void
  /** Taken as a call starts, for over(). */
  callStarts(): number
  /**
   * A call opened its connection (whatever the provider answered): a shortage noted is over, when the
   * call started after it was noted. One started before (its connection open already) says nothing:
   * the calls of a burst that had their sockets ended the shortage as the others began it, 12 lines for 60 calls.
   */
  over(started: number): void
}

export function localShortages(log: Pick<Logger, 'warn' | 'info'>, clock: Clock): LocalShortages {
  let since: number | undefined
  let waited = 0
  /** Moves on as each shortage begins: a call that started before it took a smaller number. */
  let shortages = 0
  // A limit calls hover at ends a shortage and begins one again many times a second: each line at most once a RELOG_MS.
  const shortLine = throttled(clock)
  const overLine = throttled(clock)
  return {
    callStarts: () => shortages,
    short(shortOf, code, waitMs) {
      const now = clock.now().getTime()
      waited += 1
      if (since === undefined) {
        shortages += 1
        since = now
      }
      if (!shortLine()) return
      log.warn({ code, retryInMs: waitMs, callsWaited: waited, forMs: now - since },
        `webhook calls cannot open connections: this machine is short of ${shortOf}; no call was made, they wait uncounted (no attempt of the provider's) and go again once it has some`)
    },
    over(started) {
      if (since === undefined || started !== shortages) return
      if (overLine()) log.info({ callsWaited: waited, forMs: clock.now().getTime() - since }, 'webhook calls open connections again; those that waited are being made')
      since = undefined
      waited = 0
    }
  }
}

/** True at the first call, then once RELOG_MS has passed since the last true (or the clock stepped back). */
function throttled(clock: Clock): () => boolean {
  let last: number | undefined
  return () => {
    const now = clock.now().getTime()
    if (last !== undefined && now - last < RELOG_MS && now >= last) return false
    last = now
    return true
  }
}
