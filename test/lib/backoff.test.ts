import t from 'tap'
import { backoffMs, DATABASE_BACKOFF } from '../../src/lib/backoff.js'

const retries = (count: number) => Array.from({ length: count }, (_, i) => i + 1)

t.test('a schedule is followed, and its last entry repeats', async (t) => {
  const schedule = { scheduleMs: [10_000, 60_000, 300_000] }
  t.same(retries(5).map((n) => backoffMs(schedule, n)), [10_000, 60_000, 300_000, 300_000, 300_000])
})

t.test('a first wait doubles up to its ceiling', async (t) => {
  t.same(retries(3).map((n) => backoffMs({ firstMs: 10_000, maxMs: 3_600_000 }, n)), [10_000, 20_000, 40_000])
  t.equal(backoffMs({ firstMs: 10_000, maxMs: 3_600_000 }, 9), 2_560_000)
  t.equal(backoffMs({ firstMs: 10_000, maxMs: 3_600_000 }, 10), 3_600_000)
  t.equal(backoffMs({ firstMs: 10_000, maxMs: 3_600_000 }, 5000), 3_600_000, 'no overflow after many retries')
  t.same(retries(7).map((n) => backoffMs(DATABASE_BACKOFF, n)), [100, 200, 400, 800, 1600, 2000, 2000])
})

t.test('jitter spreads a wait by the given fraction either way', async (t) => {
  const schedule = { scheduleMs: [10_000] }
  t.same([0, 0.5, 1].map((r) => backoffMs(schedule, 1, 0.2, () => r)), [8_000, 10_000, 12_000])
  t.equal(backoffMs({ firstMs: 100, maxMs: 2000 }, 2, 0.5, () => 0), 100)
  t.equal(backoffMs(schedule, 1, 0, () => { throw new Error('no jitter, no random number') }), 10_000)
})
