import type { Clock } from '../adapters/clock.js'
import type { Logger } from '../lib/logger.js'
import { throttled } from '../lib/throttled.js'

/**
 * How long the worker claims no webhook call after one could not open its connection for a shortage of
 * this machine's: about as long as the scheduler waits out a database that is away (DATABASE_BACKOFF),
 * so a raised limit is noticed within seconds. Each call failed at once and went back, so without the
 * pause a worker with a backlog claimed and put back every due delivery, again and again.
 */
export const LOCAL_SHORTAGE_WAIT_MS = 2000
/** A shortage's line is written at most this often, with how many calls waited meanwhile. */
const RELOG_MS = 60_000

/**
 * The worker's view of its machine's shortages (file descriptors, kernel buffers): when to claim calls
 * again, and its log of them, never a line per call (a burst of 60 calls past the limit wrote 48
 * "webhook call" lines, each an attempt): a line when calls begin to fail for one, again at most once
 * a minute while it lasts, and a line when a call opens its connection again after a shortage that was
 * told (only then: a shortage that began within a minute of the last line is neither begun nor ended in the log).
 */
export interface LocalShortages {
  /** A call could not open its connection: it went back uncounted, and no call is claimed for `waitMs`. */
  short(shortOf: string, code: string, waitMs: number): void
  /** Until when (ms on the clock) no webhook call is claimed; 0 or a past time when they may be. */
  pausedUntil(): number
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
  /** Whether this shortage's warning was written: its end is written then, whatever the time since the last. */
  let told = false
  let paused = 0
  /** Moves on as each shortage begins: a call that started before it took a smaller number. */
  let shortages = 0
  // A limit calls hover at ends a shortage and begins one again many times a second: a first line at most once a
  // RELOG_MS, and again at most as often while it lasts, with the calls that waited meanwhile.
  const warn = throttled(({ shortOf, ...fields }: { shortOf: string; code: string; retryInMs: number; callsWaited: number; forMs: number }) => {
    told = true
    log.warn(fields, `webhook calls cannot open connections: this machine is short of ${shortOf}; no call was made, they wait uncounted (no attempt of the provider's) and go again once it has some`)
  }, RELOG_MS, () => clock.now().getTime())
  return {
    callStarts: () => shortages,
    pausedUntil: () => paused,
    short(shortOf, code, waitMs) {
      const now = clock.now().getTime()
      waited += 1
      paused = Math.max(paused, now + waitMs)
      if (since === undefined) {
        shortages += 1
        since = now
        told = false
      }
      warn({ shortOf, code, retryInMs: waitMs, callsWaited: waited, forMs: now - since })
    },
    over(started) {
      if (since === undefined || started !== shortages) return
      if (told) log.info({ callsWaited: waited, forMs: clock.now().getTime() - since }, 'webhook calls open connections again; those that waited are being made')
      since = undefined
      waited = 0
      told = false
      paused = 0
    }
  }
}
