import t from 'tap'
import { throttled } from '../../src/lib/throttled.js'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

t.test('a report is made at most once per interval; the calls in between are dropped', async (t) => {
  const reported: number[] = []
  const report = throttled((value: number) => reported.push(value), 50)
  report(1)
  report(2)
  await sleep(60)
  report(3)
  t.same(reported, [1, 3])
})

t.test('a clock stepped back does not silence the reports for as long as the step', async (t) => {
  const wallNow = Date.now
  t.teardown(() => { Date.now = wallNow })
  const reported: number[] = []
  const report = throttled((value: number) => reported.push(value), 50)
  report(1)
  // The machine's clock is stepped back a minute while the outage goes on.
  Date.now = () => wallNow() - 60_000
  await sleep(60)
  report(2)
  t.same(reported, [1, 2], 'the next report after the interval, not after the minute')
})
