import t from 'tap'
import { DEFAULT_RETRY_POLICY, decide, retryAfterMs } from '../../src/scheduler/retry-policy.js'

const now = new Date('2026-03-02T09:00:00Z')
const middle = () => 0.5

t.test('2xx succeeds', async (t) => {
  t.same(decide({ kind: 'response', status: 204 }, 1, now), { action: 'succeed' })
})

t.test('retryable outcomes follow the schedule', async (t) => {
  const delays = [1, 2, 3, 4, 5, 6, 7].map((attempt) => {
    const d = decide({ kind: 'response', status: 503 }, attempt, now, DEFAULT_RETRY_POLICY, middle)
    return d.action === 'retry' ? d.delayMs : -1
  })
  t.same(delays, [10_000, 60_000, 300_000, 1_800_000, 7_200_000, 21_600_000, 21_600_000])
  for (const status of [408, 425, 429, 500, 502]) t.equal(decide({ kind: 'response', status }, 1, now).action, 'retry', `${status}`)
  t.equal(decide({ kind: 'error', error: 'ETIMEDOUT' }, 1, now).action, 'retry', 'network errors and timeouts')
})

t.test('jitter stays within ±20%', async (t) => {
  const low = decide({ kind: 'error', error: 'x' }, 1, now, DEFAULT_RETRY_POLICY, () => 0)
  const high = decide({ kind: 'error', error: 'x' }, 1, now, DEFAULT_RETRY_POLICY, () => 1)
  t.same([low, high], [{ action: 'retry', delayMs: 8_000 }, { action: 'retry', delayMs: 12_000 }])
})

t.test('gives up at once on other statuses, and after the last attempt', async (t) => {
  for (const status of [301, 302, 400, 401, 404, 410, 422]) t.equal(decide({ kind: 'response', status }, 1, now).action, 'give-up', `${status}`)
  t.match(decide({ kind: 'response', status: 500 }, 8, now), { action: 'give-up', reason: /8 attempts/ })
})

t.test('a delivery that used its attempts says what became of the last one, for the controller\'s mail; of an error only its code, as its text may name the URL', async (t) => {
  const reasons = [
    decide({ kind: 'response', status: 503 }, 8, now),
    decide({ kind: 'error', error: 'ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:9 for https://crm.example/hook?apiClaim=bcl_secret' }, 8, now),
    decide({ kind: 'error', error: 'Error: something odd' }, 8, now),
    decide({ kind: 'aborted', error: 'cut off: the worker shut down before the provider answered' }, 8, now),
    decide({ kind: 'response', status: 500 }, 1, now, { ...DEFAULT_RETRY_POLICY, maxAttempts: 1 })
  ].map((decision) => (decision.action === 'give-up' ? decision.reason : decision.action))
  t.same(reasons, [
    'gave up after 8 attempts, the last answered HTTP 503',
    'gave up after 8 attempts, the last without an answer (ECONNREFUSED)',
    'gave up after 8 attempts, the last without an answer',
    'gave up after 8 attempts, the last cut off by a shutdown',
    'gave up after 1 attempt, the last answered HTTP 500'
  ])
})

t.test('Retry-After is honoured up to 24 hours', async (t) => {
  t.same(decide({ kind: 'response', status: 429, retryAfter: '120' }, 1, now), { action: 'retry', delayMs: 120_000 })
  t.same(decide({ kind: 'response', status: 503, retryAfter: '999999' }, 1, now), { action: 'retry', delayMs: 86_400_000 })
  t.equal(retryAfterMs('Mon, 02 Mar 2026 09:01:00 GMT', now), 60_000)
  t.equal(retryAfterMs('soon', now), undefined)
})

t.test('a Retry-After that is neither delta-seconds nor an HTTP date is ignored: the schedule applies', async (t) => {
  // Date.parse reads "-1" as 1 January 2001 and "1.5" as 5 January 2001: dates in the past, so a retry at once.
  for (const garbage of ['-1', '1.5', '2 minutes', 'next week 3', '1e3', 'Infinity', '12:00']) {
    t.equal(retryAfterMs(garbage, now), undefined, garbage)
    t.same(decide({ kind: 'response', status: 503, retryAfter: garbage }, 1, now, DEFAULT_RETRY_POLICY, middle), { action: 'retry', delayMs: 10_000 }, garbage)
  }
  t.equal(retryAfterMs('Monday, 02-Mar-26 09:02:00 GMT', now), 120_000, 'the obsolete RFC 850 form')
  t.equal(retryAfterMs('Mon Mar  2 09:03:00 2026', now), 180_000, 'asctime, which is GMT whatever the local zone')
  t.equal(retryAfterMs('Mon, 02 Mar 2026 08:00:00 GMT', now), 0, 'an HTTP date in the past asks for now')
  t.equal(retryAfterMs(' 30 ', now), 30_000)
})

t.test('a Retry-After that asks for no wait (0, a date in the past) leaves the schedule: no attempt is spent at once', async (t) => {
  for (const none of ['0', '00', 'Mon, 02 Mar 2026 08:00:00 GMT', 'Sun, 06 Nov 1994 08:49:37 GMT', 'Mon, 02 Mar 2026 09:00:00 GMT']) {
    t.same(decide({ kind: 'response', status: 503, retryAfter: none }, 1, now, DEFAULT_RETRY_POLICY, middle), { action: 'retry', delayMs: 10_000 }, none)
    t.same(decide({ kind: 'response', status: 429, retryAfter: none }, 3, now, DEFAULT_RETRY_POLICY, middle), { action: 'retry', delayMs: 300_000 }, none)
  }
  t.same(decide({ kind: 'response', status: 503, retryAfter: '1' }, 1, now), { action: 'retry', delayMs: 1000 }, 'a second is a wait, and honoured')
})

t.test('a two-digit year is read as RFC 9110 says: the next one with those digits, unless that is more than 50 years ahead', async (t) => {
  // Date.parse puts 00-49 in 20xx and 50-99 in 19xx whenever it runs, so "50" in 2026 was 1950, a retry at once.
  const until = (iso: string, from: Date) => Date.parse(iso) - from.getTime()
  t.equal(retryAfterMs('Wednesday, 02-Mar-50 09:00:00 GMT', now), until('2050-03-02T09:00:00Z', now), '"50" in 2026 is 2050')
  t.equal(retryAfterMs('Monday, 02-Mar-76 09:00:00 GMT', now), until('2076-03-02T09:00:00Z', now), 'exactly 50 years ahead is not more than 50')
  t.equal(retryAfterMs('Mon, 02 Mar 76 09:00:00 GMT', now), until('2076-03-02T09:00:00Z', now), 'the same with spaces')
  t.equal(retryAfterMs('Monday, 02-Mar-76 09:00:01 GMT', now), 0, 'a second more is 1976, past')
  t.equal(retryAfterMs('Tuesday, 02-Mar-77 09:00:00 GMT', now), 0, '"77" in 2026 is 1977')
  t.equal(retryAfterMs('Tuesday, 03-Mar-26 09:00:00 GMT', now), 86_400_000, '"26" in 2026 is 2026')

  const in2060 = new Date('2060-01-01T00:00:00Z')
  t.equal(retryAfterMs('Thursday, 01-Jan-99 00:00:00 GMT', in2060), until('2099-01-01T00:00:00Z', in2060), '"99" in 2060 is 2099')
  t.equal(retryAfterMs('Thursday, 01-Jul-10 00:00:00 GMT', in2060), 0, '"10" in 2060 would be July 2110, more than 50 years ahead: 2010')
  t.equal(retryAfterMs('Wednesday, 01-Jan-10 00:00:00 GMT', in2060), until('2110-01-01T00:00:00Z', in2060), 'but 1 January 2110 is exactly 50 years ahead')
  const in2099 = new Date('2099-06-01T00:00:00Z')
  t.equal(retryAfterMs('Wednesday, 01-Jun-01 00:00:00 GMT', in2099), until('2101-06-01T00:00:00Z', in2099), '"01" in 2099 is 2101')
  t.equal(retryAfterMs('Mon, 02 Mar 2076 09:00:01 GMT', now), until('2076-03-02T09:00:01Z', now), 'a four-digit year is taken as it is')
})

t.test('a status past 599 is no 5xx: it gives up at once like any other status', async (t) => {
  // Node's client passes on any three digits; 600 and 999 were retried as server errors.
  for (const status of [600, 699, 999]) t.match(decide({ kind: 'response', status }, 1, now), { action: 'give-up', reason: `HTTP ${status} is not retried` }, `${status}`)
  t.equal(decide({ kind: 'response', status: 599 }, 1, now).action, 'retry')
})
