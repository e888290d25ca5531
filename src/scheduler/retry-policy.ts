import { backoffMs } from '../lib/backoff.js'

export interface RetryPolicy {
  /** Delay before retry n (index n-1); the last entry repeats. */
  scheduleMs: number[]
  maxAttempts: number
  /** ±fraction of random spread, so retries of many calls do not arrive together. */
  jitter: number
  maxRetryAfterMs: number
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  scheduleMs: [10_000, 60_000, 300_000, 1_800_000, 7_200_000, 21_600_000],
  maxAttempts: 8,
  jitter: 0.2,
  maxRetryAfterMs: 24 * 3_600_000
}

export type AttemptResult =
  | { kind: 'response'; status: number; retryAfter?: string | undefined }
  | { kind: 'error'; error: string }
  /** The client refused the target (scheme or address): no call was made and none ever will be. */
  | { kind: 'refused'; error: string }
  /** The call was cut off (the worker shut down) before an answer: it counts, and another worker tries again now. */
  | { kind: 'aborted'; error: string }

export type Decision =
  | { action: 'succeed' }
  | { action: 'retry'; delayMs: number }
  | { action: 'give-up'; reason: string }

const RETRYABLE_STATUSES = new Set([408, 425, 429])

export function decide(result: AttemptResult, attempt: number, now: Date, policy = DEFAULT_RETRY_POLICY, random = Math.random): Decision {
  if (result.kind === 'response' && result.status >= 200 && result.status < 300) return { action: 'succeed' }
  if (result.kind === 'refused') return { action: 'give-up', reason: `target refused, not retried: ${result.error}` }
  // A cut-off call counts, as it may have reached the provider, and is made again at once in place of
  // its wait. The schedule stays by attempt number: the failure after it waits its own number's entry.
  if (result.kind === 'aborted') {
    return attempt >= policy.maxAttempts ? { action: 'give-up', reason: exhausted(result, attempt) } : { action: 'retry', delayMs: 0 }
  }
  const retryable = result.kind === 'error' || (result.status >= 500 && result.status < 600) || RETRYABLE_STATUSES.has(result.status)
  if (!retryable) return { action: 'give-up', reason: `HTTP ${result.status} is not retried` }
  if (attempt >= policy.maxAttempts) return { action: 'give-up', reason: exhausted(result, attempt) }
  // A Retry-After that asks for no wait (0, or an HTTP date not in the future: a provider's clock behind
  // ours) leaves the schedule in place: taken as it is, a provider answering so every time was called
  // for all its attempts at once, within one pass, and the step failed a second after it started.
  const requested = result.kind === 'response' ? retryAfterMs(result.retryAfter, now) : undefined
  if (requested !== undefined && requested > 0) return { action: 'retry', delayMs: Math.min(requested, policy.maxRetryAfterMs) }
  return { action: 'retry', delayMs: backoffMs(policy, attempt, policy.jitter, random) }
}

/** "gave up after 8 attempts", "gave up after 1 attempt". */
export function gaveUpAfter(attempts: number): string {
  return `gave up after ${attempts} attempt${attempts === 1 ? '' : 's'}`
}

/**
 * Why a delivery that used its attempts gave up, with what became of the last one: the controller's
 * mail and the step's activity said only "gave up after 8 attempts", and whoever would retry the step
 * had to look up the attempt log to learn whether the provider answered 503 or was not reached at all.
 * Of an error only its code is shown (ECONNREFUSED, ETIMEDOUT): its text may name the call's URL.
 */
function exhausted(result: Exclude<AttemptResult, { kind: 'refused' }>, attempt: number): string {
  const attempts = gaveUpAfter(attempt)
  if (result.kind === 'response') return `${attempts}, the last answered HTTP ${result.status}`
  if (result.kind === 'aborted') return `${attempts}, the last cut off by a shutdown`
  const code = /^([A-Z][A-Z0-9_]+):/.exec(result.error)?.[1]
  return `${attempts}, the last without an answer${code ? ` (${code})` : ''}`
}

/**
 * The three forms of an HTTP date (RFC 9110, 5.6.7): IMF-fixdate, the obsolete RFC 850 form and
 * asctime, which carries no zone and is GMT. Date.parse alone reads nearly anything ("-1", "1.5",
 * "2 minutes") as a date long past, which asked for the retry at once.
 */
const IMF_OR_RFC850_DATE = /^[A-Za-z]{3,9}, (\d{2})[ -]([A-Za-z]{3})[ -](\d{2}(?:\d{2})?) (\d{2}:\d{2}:\d{2}) GMT$/
const ASCTIME_DATE = /^[A-Za-z]{3} [A-Za-z]{3} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}$/

/** Retry-After as delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function retryAfterMs(header: string | undefined, now: Date): number | undefined {
  if (!header) return undefined
  const value = header.trim()
  if (/^\d+$/.test(value)) return Number(value) * 1000
  const date = httpDate(value, now)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now.getTime())
}

function httpDate(value: string, now: Date): number {
  if (ASCTIME_DATE.test(value)) return Date.parse(`${value} GMT`)
  const [, day, month, year, time] = IMF_OR_RFC850_DATE.exec(value) ?? []
  if (year === undefined) return Number.NaN
  const at = (fullYear: number) => Date.parse(`${day} ${month} ${fullYear} ${time} GMT`)
  if (year.length === 4) return at(Number(year))
  // RFC 9110 5.6.7: a two-digit year more than 50 years ahead is the latest past year with those
  // digits. Date.parse would put 00-49 in 20xx and 50-99 in 19xx, whatever the year now.
  const latest = new Date(now)
  latest.setUTCFullYear(now.getUTCFullYear() + 50)
  const candidate = Math.floor(latest.getUTCFullYear() / 100) * 100 + Number(year)
  const date = at(candidate)
  return date > latest.getTime() ? at(candidate - 100) : date
}
