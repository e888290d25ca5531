import t from 'tap'
import { coalescedWakeups, type WorkTable } from '../../src/db/wakeups.js'

// The coalescing alone, with a `send` that records: real timers of a few milliseconds.
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

t.test('the first announcement goes out at once; those within the window after it go out together once', async (t) => {
  const sent: { tables: WorkTable[]; at: number }[] = []
  const wakeups = coalescedWakeups(async (tables) => {
    sent.push({ tables, at: performance.now() })
  }, { windowMs: 50 })
  const began = performance.now()
  wakeups.announce(['deliveries'])
  t.same(sent.map((s) => s.tables), [['deliveries']], 'sent without waiting')
  wakeups.announce(['instance_steps'])
  wakeups.announce(['deliveries', 'instance_steps'])
  wakeups.announce(['outbox_mails'])
  wakeups.announce([])
  t.equal(sent.length, 1, 'the rest waits for the window')
  await sleep(120)
  t.same(sent.map((s) => s.tables), [['deliveries'], ['instance_steps', 'deliveries', 'outbox_mails']], 'one send for all of them, each table once')
  t.ok(sent[1]!.at - began >= 45, 'not before the window ended')
  await wakeups.close()
})

t.test('nothing announced, nothing sent; close() sends what is gathered and waits for it', async (t) => {
  const sent: WorkTable[][] = []
  const pending: (() => void)[] = []
  const wakeups = coalescedWakeups((tables) => {
    sent.push(tables)
    return new Promise<void>((resolve) => pending.push(resolve))
  }, { windowMs: 10_000 })
  wakeups.announce([])
  t.same(sent, [])
  wakeups.announce(['deliveries'])
  wakeups.announce(['outbox_mails'])
  t.same(sent, [['deliveries']])
  let closed = false
  const closing = wakeups.close().then(() => { closed = true })
  t.same(sent, [['deliveries'], ['outbox_mails']], 'sent at close, not after the 10 s window')
  await sleep(10)
  t.notOk(closed, 'close waits for the send under way')
  for (const release of pending) release()
  await closing
})

t.test('an announcement after close sends nothing, at once or after the window (the database is closing)', async (t) => {
  const sent: WorkTable[][] = []
  const wakeups = coalescedWakeups(async (tables) => {
    sent.push(tables)
  }, { windowMs: 5 })
  wakeups.announce(['deliveries'])
  await wakeups.close()
  wakeups.announce(['instance_steps'])
  await sleep(30)
  wakeups.announce(['outbox_mails'])
  await sleep(30)
  t.same(sent, [['deliveries']])
})

t.test('a failed send is reported and the next one still goes out', async (t) => {
  const errors: Error[] = []
  let fail = true
  const sent: WorkTable[][] = []
  const wakeups = coalescedWakeups(async (tables) => {
    if (fail) throw new Error('connection refused')
    sent.push(tables)
  }, { windowMs: 5, onError: (error) => errors.push(error) })
  wakeups.announce(['deliveries'])
  await sleep(20)
  t.same(errors.map((e) => e.message), ['connection refused'])
  fail = false
  wakeups.announce(['deliveries'])
  await wakeups.close()
  t.same(sent, [['deliveries']])
})
