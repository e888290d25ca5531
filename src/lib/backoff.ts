/**
 * The waits between tries of work that failed: a table whose last entry repeats (webhook calls), or a
 * first wait that doubles up to a ceiling (mail, the database while it is away).
 */
export type Backoff = { scheduleMs: readonly number[] } | { firstMs: number; maxMs: number }

/** While the database is away: 100 ms doubling to 2 s, so its return is noticed within about two seconds. */
export const DATABASE_BACKOFF: Backoff = { firstMs: 100, maxMs: 2000 }

/** The wait before retry `retry` (1 for the first), spread by ±`jitter` (a fraction) so that many retries do not arrive together. */
export function backoffMs(backoff: Backoff, retry: number, jitter = 0, random = Math.random): number {
  const base = 'scheduleMs' in backoff
    ? backoff.scheduleMs[Math.min(retry, backoff.scheduleMs.length) - 1] ?? 0
    : Math.min(backoff.maxMs, backoff.firstMs * 2 ** Math.max(0, retry - 1))
  return jitter === 0 ? base : Math.round(base * (1 - jitter + 2 * jitter * random()))
}
