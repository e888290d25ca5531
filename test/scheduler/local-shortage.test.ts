// The worker's view of its machine's shortages (src/scheduler/local-shortage.ts): when it claims calls again,
// and its log, a line when a shortage begins (at most once a minute) and one when it ends, for each shortage
// whose beginning was told. The end's line had a throttle of its own: a shortage told after another's end
// within the minute was never said to be over, and the log ended saying the worker was short.
import t from 'tap'
import { localShortages } from '../../src/scheduler/local-shortage.js'
import { TestClock } from '../helpers/clock.js'

function setup() {
  const clock = new TestClock(new Date('2026-03-02T09:00:00Z'))
  const lines: { level: string; msg: string | undefined }[] = []
  const log = { warn: (_: object, msg?: string) => lines.push({ level: 'warn', msg }), info: (_: object, msg?: string) => lines.push({ level: 'info', msg }) }
  return { clock, lines, shortages: localShortages(log, clock) }
}

const levels = (lines: { level: string }[]) => lines.map((line) => line.level)

t.test('each shortage that was told is told to be over, however soon after the last', async (t) => {
  const { clock, lines, shortages } = setup()
  const shortAndOver = (atMs: number, overAtMs: number) => {
    clock.set(new Date(Date.parse('2026-03-02T09:00:00Z') + atMs))
    shortages.short('file descriptors', 'EMFILE', 2000)
    clock.advance(overAtMs - atMs)
    shortages.over(shortages.callStarts())
  }
  shortAndOver(0, 30_000)
  shortAndOver(70_000, 75_000)
  t.same(levels(lines), ['warn', 'info', 'warn', 'info'], 'begun, over, begun again past the minute, and over again 5 s later')
  shortAndOver(80_000, 85_000)
  t.same(levels(lines), ['warn', 'info', 'warn', 'info'], 'a shortage within the minute of the last line: neither begun nor ended in the log')
})

t.test('a long shortage is told again at most once a minute; calls are claimed again once its pause ends', async (t) => {
  const { clock, lines, shortages } = setup()
  const start = clock.now().getTime()
  shortages.short('file descriptors', 'EMFILE', 2000)
  t.equal(shortages.pausedUntil(), start + 2000, 'no call is claimed for 2 s')
  for (let i = 0; i < 30; i++) {
    clock.advance(2000)
    shortages.short('file descriptors', 'EMFILE', 2000)
  }
  t.same(levels(lines), ['warn', 'warn'], 'told at its start and once a minute after')
  t.equal(shortages.pausedUntil(), clock.now().getTime() + 2000, 'each shortage met moves the pause on')
  const started = shortages.callStarts()
  shortages.over(started)
  t.equal(shortages.pausedUntil(), 0, 'over: calls are claimed at once')
  t.same(levels(lines), ['warn', 'warn', 'info'])
})
