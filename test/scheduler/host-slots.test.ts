import { sql } from 'kysely'
import t from 'tap'
import { acquireHostSlot, hostKey, HostSlotPool, type HostLimit } from '../../src/scheduler/host-slots.js'
import { createTestDatabase } from '../helpers/database.js'

const database = await createTestDatabase()
t.teardown(() => database.drop())
const db = database.db
const limit = (owner: string, extra: Partial<HostLimit> = {}): HostLimit => ({ perHost: 2, ttlMs: 60_000, callMs: 1000, owner, ...extra })
const slotsOf = async (host: string) => Number((await sql<{ n: string }>`select count(*) as n from host_slots where host = ${host}`.execute(db)).rows[0]!.n)

t.test('the host key is host:port with the default port filled in', async (t) => {
  t.equal(hostKey('https://provider.example/hook?x=1'), 'provider.example:443')
  t.equal(hostKey('http://provider.example/hook'), 'provider.example:80')
  t.equal(hostKey('http://[::1]:8080/hook'), '[::1]:8080')
  t.equal(hostKey('not a url'), undefined)
})

t.test('at most perHost slots per host, whichever worker asks; other hosts are not affected', async (t) => {
  t.ok(await acquireHostSlot(db, 'a.example:443', limit('w1')))
  t.ok(await acquireHostSlot(db, 'a.example:443', limit('w2')))
  t.equal(await acquireHostSlot(db, 'a.example:443', limit('w2')), undefined, 'the third is refused')
  t.ok(await acquireHostSlot(db, 'b.example:443', limit('w2')), 'another host has its own slots')
  const concurrent = await Promise.all(Array.from({ length: 10 }, () => acquireHostSlot(db, 'c.example:443', limit('w3'))))
  t.equal(concurrent.filter((s) => s !== undefined).length, 2, 'ten takers at once: exactly two win')
})

t.test('a dead worker\'s slot expires by itself', async (t) => {
  t.ok(await acquireHostSlot(db, 'dead.example:80', limit('gone', { perHost: 1, ttlMs: 200 })))
  t.equal(await acquireHostSlot(db, 'dead.example:80', limit('w1', { perHost: 1 })), undefined)
  await new Promise((resolve) => setTimeout(resolve, 250))
  t.ok(await acquireHostSlot(db, 'dead.example:80', limit('w1', { perHost: 1 })), 'free again after its ttl')
})

t.test('the pool reuses a handed-back slot, frees idle ones, and frees all on close', async (t) => {
  const errors: unknown[] = []
  const pool = new HostSlotPool(db, limit('pool', { perHost: 1 }), (e) => errors.push(e))
  const first = await pool.take('p.example:80')
  t.ok(first)
  t.equal(await pool.take('p.example:80'), undefined, 'the host is full')
  pool.give('p.example:80', first!)
  const again = await pool.take('p.example:80')
  t.equal(again?.id, first!.id, 'the same slot, without another round trip')
  pool.give('p.example:80', again!)
  t.equal(await slotsOf('p.example:80'), 1, 'an idle slot is held for a moment')
  await new Promise((resolve) => setTimeout(resolve, 600))
  t.equal(await slotsOf('p.example:80'), 0, 'then freed')
  const late = await pool.take('p.example:80')
  pool.give('p.example:80', late!)
  await pool.close()
  t.equal(await slotsOf('p.example:80'), 0, 'close frees the idle slots at once')
  t.same(errors, [])
})

t.test('a slot close to its expiry is not reused for a call that could outlive it', async (t) => {
  const pool = new HostSlotPool(db, limit('short', { perHost: 2, ttlMs: 3000, callMs: 1000 }), () => {})
  const slot = await pool.take('s.example:80')
  pool.give('s.example:80', slot!)
  const next = await pool.take('s.example:80')
  t.ok(next && next.id !== slot!.id, 'a fresh slot instead (3 s ttl < 1 s call + 5 s skew margin)')
  await pool.close()
})
