import t from 'tap'
import { DatabaseClock, startDatabaseClock } from '../../src/adapters/database-clock.js'
import { databaseTime } from '../../src/db/database-time.js'
import type { ReceivedCall, Reply } from '../helpers/provider.js'
import { setupRuntime } from '../helpers/runtime.js'

const SECOND = 1000
const rt = await setupRuntime(t)
const read = (elapsed: () => number) => databaseTime(rt.db, elapsed)

/** A timer that only goes forward, moved by hand. */
function elapsedTimer() {
  let ms = 1000
  return { elapsed: () => ms, advance: (by: number) => { ms += by } }
}

t.test('the clock is the database\'s, carried forward on the forward-only timer, whatever this machine\'s clock does', async (t) => {
  let wallMs = Date.now() + 10 * 60 * SECOND
  const timer = elapsedTimer()
  const clock = new DatabaseClock({ read, elapsed: timer.elapsed, wall: () => wallMs })
  t.equal(clock.now().getTime(), wallMs, 'before a reading, the machine\'s clock')
  t.equal(clock.offsetMs(), undefined)
  t.equal(await clock.sync(), true)
  const database = (await read(() => performance.now())).time.getTime()
  t.ok(Math.abs(clock.now().getTime() - database) < 2 * SECOND, 'after a reading, the database\'s (not 10 minutes ahead)')
  t.ok(Math.abs(clock.offsetMs()! - 10 * 60 * SECOND) < 2 * SECOND, 'the machine\'s clock is known to be 10 minutes ahead')
  const read1 = clock.now().getTime()
  timer.advance(5 * SECOND)
  t.equal(clock.now().getTime(), read1 + 5 * SECOND, 'the timer carries it forward')
  wallMs -= 60 * SECOND
  t.equal(clock.now().getTime(), read1 + 5 * SECOND, 'a step of the machine\'s clock moves nothing')
})

t.test('a reading that fails keeps the time as it was', async (t) => {
  const wallMs = Date.now() - 60 * SECOND
  const clock = new DatabaseClock({ read: () => Promise.reject(new Error('the database is away')), wall: () => wallMs })
  t.equal(await clock.sync(), false)
  t.equal(clock.now().getTime(), wallMs, 'the machine\'s clock until a reading succeeds')
})

t.test('a reading that waited for a connection is as precise as its statement', async (t) => {
  const timer = elapsedTimer()
  const databaseMs = Date.UTC(2026, 11, 6, 12)
  // Four seconds for a pooled connection under load, then a statement of 10 ms whose server read its clock in the middle.
  const clock = new DatabaseClock({
    read: async (elapsed) => {
      timer.advance(4000)
      const sentAt = elapsed()
      timer.advance(10)
      return { time: new Date(databaseMs), sentAt, answeredAt: elapsed() }
    },
    elapsed: timer.elapsed
  })
  t.equal(await clock.take(), true)
  t.equal(clock.now().getTime(), databaseMs + 5, 'half the statement\'s round trip since the server read its clock, not half the wait')
})

t.test('the first reading waits for the database: a start does not go by this machine\'s clock meanwhile', async (t) => {
  const log = { warn() {} }
  await t.rejects(startDatabaseClock(() => Promise.reject(new Error('the database is away')), log), /the database is away/)
})

t.test('a machine whose clock is far off is named in the log at the start', async (t) => {
  const warnings: string[] = []
  const log = { warn: (_: object, message: string) => { warnings.push(message) } }
  const behind = await startDatabaseClock(read, log, () => Date.now() - 90 * SECOND)
  behind.stop()
  t.match(warnings, [/clock is (89|90|91) s behind the database's/])
  const near = await startDatabaseClock(read, log, Date.now)
  near.stop()
  t.equal(warnings.length, 1, 'a clock in step is not named')
})

// Two workers on machines whose clocks are 80 s apart, with 60 s leases: the one ahead took back the
// other's claims while their calls were being made, and made them again (36 of 80 in a probe at -30 s and +30 s).
t.test('a worker whose machine\'s clock is ahead does not take back the calls of one whose clock is behind', async (t) => {
  const quiet = { warn() {} }
  const clockA = await startDatabaseClock(read, quiet, () => Date.now() - 40 * SECOND)
  const clockB = await startDatabaseClock(read, quiet, () => Date.now() + 40 * SECOND)
  t.teardown(() => { clockA.stop(); clockB.stop() })
  let arrived: () => void = () => {}
  const firstCall = new Promise<void>((resolve) => { arrived = resolve })
  let release: () => void = () => {}
  const released = new Promise<void>((resolve) => { release = resolve })
  let calls = 0
  rt.provider.always(async (_call: ReceivedCall): Promise<Reply> => {
    if (calls++ === 0) {
      arrived()
      await released
    }
    return { status: 200, body: 'ok' }
  })
  const templateId = await rt.template([{ kind: 'webhook', name: 'Valuation across clocks' }])
  await rt.start(templateId)
  const workerA = rt.newScheduler({}, undefined, { clock: clockA })
  const workerB = rt.newScheduler({}, undefined, { clock: clockB })
  const passA = workerA.runOnce()
  await firstCall
  // Worker A's call is under way, 0.1 s into its 60 s lease.
  const passB = await workerB.runOnce()
  release()
  await passA
  t.equal(passB.reaped, 0, 'worker B took nothing back')
  t.equal(calls, 1, 'one call')
})
