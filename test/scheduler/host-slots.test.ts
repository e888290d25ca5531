import { sql } from '../../src/db/kysely.js'
import t from 'tap'
import { hostKey } from '../../src/lib/host-key.js'
import { HostSlots, type HostSlot } from '../../src/scheduler/host-slots.js'
import { createTestDatabase } from '../helpers/database.js'

const database = await createTestDatabase()
t.teardown(() => database.drop())
const db = database.db

/** A worker's slots on a connection of its own, as buildScheduler makes them. */
function worker(perHost: number, errors: unknown[] = []): HostSlots {
  const slots = new HostSlots(() => database.session({ timeouts: true }), perHost, (e) => errors.push(e))
  t.teardown(() => slots.close())
  return slots
}

async function advisoryLocks(): Promise<{ pid: number; objid: number }[]> {
  const { rows } = await sql<{ pid: number; objid: number }>`
    select pid, objid::int as objid from pg_locks
    where locktype = 'advisory' and granted and database = (select oid from pg_database where datname = current_database())
    order by objid
  `.execute(db)
  return rows
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

t.test('the host key is host:port with the default port filled in', async (t) => {
  t.equal(hostKey('https://provider.example/hook?x=1'), 'provider.example:443')
  t.equal(hostKey('http://provider.example/hook'), 'provider.example:80')
  t.equal(hostKey('http://[::1]:8080/hook'), '[::1]:8080')
  t.equal(hostKey('not a url'), undefined)
})

t.test('at most perHost slots per host across workers; other hosts are not affected', async (t) => {
  const [a, b] = [worker(2), worker(2)]
  const first = await a.acquire('a.example:443', 0)
  const second = await b.acquire('a.example:443', 0)
  t.ok(first && second, 'two workers take one slot each')
  t.not(first!.number, second!.number, 'different slots')
  t.equal(await b.acquire('a.example:443', 0), undefined, 'the third is refused')
  t.ok(await b.acquire('b.example:443', 0), 'another host has its own slots')
  a.release(first!)
  b.release(second!)
})

t.test('one worker never counts one lock twice: ten takers at once get exactly perHost slots', async (t) => {
  const slots = worker(2)
  const taken = await Promise.all(Array.from({ length: 10 }, () => slots.acquire('c.example:443', 0)))
  const granted = taken.filter((s): s is HostSlot => s !== undefined)
  t.equal(granted.length, 2)
  t.same(new Set(granted.map((s) => s.number)).size, 2, 'two distinct slots')
  for (const slot of granted) slots.release(slot)
})

t.test('a burst of calls to one host asks for its slots in two round trips, not one each: with the database far away each one is the whole wait', async (t) => {
  let statements = 0
  const counted = new HostSlots(async () => {
    const session = await database.session({ timeouts: true })
    const db = session.db.withPlugin({
      transformQuery: (args) => args.node,
      transformResult: async (args) => {
        statements += 1
        return args.result
      }
    })
    return { ...session, db }
  }, 20, (e) => t.fail(String(e)))
  t.teardown(() => counted.close())
  // One call asks; the others come while its question is on its way, then all at once.
  const first = counted.acquire('burst.example:443', 0)
  await new Promise((resolve) => setImmediate(resolve))
  const taken = await Promise.all([first, ...Array.from({ length: 24 }, () => counted.acquire('burst.example:443', 0))])
  const granted = taken.filter((s): s is HostSlot => s !== undefined)
  t.equal(granted.length, 20, 'as many as the host takes')
  t.equal(new Set(granted.map((s) => s.number)).size, 20, 'each a slot of its own')
  t.equal(statements, 2, 'the first ask alone, then together those that came while it was answered')
  for (const slot of granted) counted.release(slot)
})

// Session-level advisory locks outlive the statement that took them: a batch of asks that failed partway kept
// the slots its first try_host_slot calls had locked, unknown to the worker, for as long as its session lived.
t.test('a batch of asks that fails partway gives back the slots it had locked: other workers may use them', async (t) => {
  const own = await createTestDatabase()
  t.teardown(() => own.drop())
  // The third try_host_slot of this database fails, as a statement cancelled or out of lock memory does.
  await sql.raw(`
    alter function try_host_slot(text, integer, integer[]) rename to try_host_slot_itself;
    create sequence test_slot_tries;
    create function try_host_slot(p_host text, p_limit integer, p_held integer[]) returns integer language plpgsql as $$
    begin
      if nextval('test_slot_tries') = 3 then raise exception 'out of shared memory' using errcode = 'out_of_memory'; end if;
      return try_host_slot_itself(p_host, p_limit, p_held);
    end $$`).execute(own.db)
  const errors: unknown[] = []
  const slotsAt = (onError: (e: unknown) => void) => {
    const slots = new HostSlots(() => own.session({ timeouts: true }), 4, onError)
    t.teardown(() => slots.close())
    return slots
  }
  const a = slotsAt((e) => errors.push(e))
  const first = a.acquire('mid.example:443', 0)
  await new Promise((resolve) => setImmediate(resolve))
  // The first ask alone takes a slot (try 1); the three that came meanwhile go together and fail at try 3, after try 2 locked one.
  const taken = await Promise.all([first, a.acquire('mid.example:443', 0), a.acquire('mid.example:443', 0), a.acquire('mid.example:443', 0)])
  t.equal(taken.filter((s) => s !== undefined).length, 1, 'the first ask had its slot; the batch failed')
  t.match(errors, [{ code: '53200' }], 'the failure was told')
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_locks where locktype = 'advisory' and granted
    and database = (select oid from pg_database where datname = current_database())`.execute(own.db)
  t.equal(rows[0]!.n, 1, 'only the slot the worker holds is locked: the one the batch took before it failed is given back')
  const b = slotsAt((e) => t.fail(String(e)))
  const others = await Promise.all(Array.from({ length: 3 }, () => b.acquire('mid.example:443', 0)))
  t.equal(others.filter((s) => s !== undefined).length, 3, 'another worker takes every slot the first does not hold')
})

t.test('a slot given back goes straight to a call waiting at the same worker', async (t) => {
  const slots = worker(1)
  const held = await slots.acquire('d.example:80', 0)
  t.ok(held)
  const waiting = slots.acquire('d.example:80', 5000)
  await sleep(20)
  const releasedAt = Date.now()
  slots.release(held!)
  const next = await waiting
  t.equal(next?.number, held!.number, 'the same slot')
  t.ok(Date.now() - releasedAt < 50, `handed over in ${Date.now() - releasedAt} ms, without waiting for a poll`)
  slots.release(next!)
})

t.test('a slot freed by another worker reaches a waiting call within the linger and a poll', async (t) => {
  const [a, b] = [worker(1), worker(1)]
  const held = await a.acquire('e.example:80', 0)
  const waiting = b.acquire('e.example:80', 5000)
  const releasedAt = Date.now()
  a.release(held!)
  const next = await waiting
  t.ok(next, 'worker B got the slot')
  const took = Date.now() - releasedAt
  t.ok(took < 600, `after ${took} ms (linger 200 ms, poll 100 ms)`)
  b.release(next!)
})

t.test('a slot freed by another worker reaches a waiting call within the linger also when the clock was stepped back meanwhile', async (t) => {
  const wallNow = Date.now
  t.teardown(() => { Date.now = wallNow })
  const [a, b] = [worker(1), worker(1)]
  const held = await a.acquire('g.example:80', 0)
  const waiting = b.acquire('g.example:80', 3000)
  const releasedAt = performance.now()
  a.release(held!)
  // The machine's clock is stepped back a minute as the slot begins to linger at worker A.
  Date.now = () => wallNow() - 60_000
  const next = await waiting
  t.ok(next, 'worker B got the slot, not after the minute')
  const took = performance.now() - releasedAt
  t.ok(took < 600, `after ${Math.round(took)} ms (linger 200 ms, poll 100 ms)`)
  if (next) b.release(next)
})

t.test('waiting calls are served in the order their deliveries fell due, undated ones after them in the order they came', async (t) => {
  const slots = worker(4)
  const host = 'm.example:80'
  const taken = await Promise.all([1, 2, 3, 4].map(() => slots.acquire(host, 0)))
  t.ok(taken.every(Boolean), 'every slot is taken')
  const served: string[] = []
  const waitFor = (name: string, dueAt?: number) => slots.acquire(host, 10_000, undefined, dueAt === undefined ? {} : { dueAt }).then((slot) => {
    served.push(name)
    return slot
  })
  const line = [waitFor('undated, first'), waitFor('due at 3000', 3000), waitFor('undated, second'), waitFor('due at 1000', 1000)]
  for (const until = Date.now() + 5000; !slots.isCrowded(host) && Date.now() < until;) await sleep(5)
  t.ok(slots.isCrowded(host), 'four calls wait')
  for (const slot of taken) slots.release(slot!)
  const granted = await Promise.all(line)
  t.ok(granted.every(Boolean), 'each got a slot')
  t.same(served, ['due at 1000', 'due at 3000', 'undated, first', 'undated, second'])
  for (const slot of granted) slots.release(slot!)
})

t.test('places left in a full host\'s line: what a claim may take for it without turning calls away', async (t) => {
  const roomy = worker(2)
  const one = await roomy.acquire('q.example:80', 0)
  t.equal(roomy.placesAt('q.example:80'), undefined, 'a slot of two in use, none found taken elsewhere: not full, claims are not held back')
  roomy.release(one!)
  t.equal(roomy.placesAt('never.example:80'), undefined, 'a host never asked for')

  const slots = worker(1)
  const host = 'p.example:80'
  const taken = await slots.acquire(host, 0)
  t.equal(slots.placesAt(host), 1, 'this worker\'s calls hold every slot: full, one place in its line')
  const first = slots.acquire(host, 10_000)
  for (const until = Date.now() + 5000; !slots.isCrowded(host) && Date.now() < until;) await sleep(5)
  t.ok(slots.isCrowded(host), 'one waits: crowded')
  t.equal(slots.placesAt(host), 0, 'no place left')
  t.equal(await slots.acquire(host, 10_000), undefined, 'another is turned away at once')
  slots.release(taken!)
  const next = await first
  t.ok(next, 'the waiting call got the slot')
  slots.release(next!)
})

t.test('a call waits no longer than it was told, and no more calls wait than may run', async (t) => {
  const slots = worker(1)
  const held = await slots.acquire('f.example:80', 0)
  const started = Date.now()
  t.equal(await slots.acquire('f.example:80', 150), undefined, 'none came in time')
  t.ok(Date.now() - started >= 140)
  const waiting = slots.acquire('f.example:80', 5000)
  // It waits once the database has said the host is full: a round trip, which a busy machine can make slow.
  for (const until = Date.now() + 5000; !slots.isCrowded('f.example:80') && Date.now() < until;) await sleep(5)
  t.ok(slots.isCrowded('f.example:80'), 'one call waits: the host is crowded at this worker')
  t.equal(await slots.acquire('f.example:80', 5000), undefined, 'a second would-be waiter is turned away at once')
  slots.release(held!)
  const next = await waiting
  t.ok(next, 'the waiting call got the slot')
  const stop = new AbortController()
  const blocked = slots.acquire('f.example:80', 5000, stop.signal)
  const stoppedAt = Date.now()
  stop.abort()
  t.equal(await blocked, undefined, 'a stopping worker stops waiting')
  t.ok(Date.now() - stoppedAt < 50, 'at once')
  slots.release(next!)
})

t.test('a worker whose connection dies gives its slots back at once; its next call starts afresh', async (t) => {
  const errors: unknown[] = []
  const [a, b] = [worker(1, errors), worker(1)]
  const held = await a.acquire('h.example:80', 0)
  t.equal(await b.acquire('h.example:80', 0), undefined, 'the host is full')
  const { rows } = await sql<{ pid: number }>`
    select pid from pg_locks where locktype = 'advisory' and classid::int = hashtext('h.example:80') and objid::int = ${held!.number}
  `.execute(db)
  t.equal(rows.length, 1, 'A holds the lock')
  await sql`select pg_terminate_backend(${rows[0]!.pid})`.execute(db)
  await sleep(50)
  const taken = await b.acquire('h.example:80', 0)
  t.ok(taken, 'worker B takes the slot as soon as A\'s connection is gone')
  a.release(held!)
  t.equal(await a.acquire('h.example:80', 0), undefined, 'A, reconnected, does not think it still holds a slot')
  b.release(taken!)
})

t.test('idle slots are freed after a moment, and all of them on close', async (t) => {
  const slots = new HostSlots(() => database.session({ timeouts: true }), 3, () => {})
  const taken = await Promise.all([slots.acquire('i.example:80', 0), slots.acquire('i.example:80', 0)])
  // This worker's own locks: the slots of the tests before may still be going back meanwhile.
  const session = taken[0]!.session
  const held = async () => (await advisoryLocks()).filter((lock) => lock.pid === session).length
  for (const slot of taken) slots.release(slot!)
  t.equal(await held(), 2, 'idle slots are held for a moment')
  await sleep(500)
  t.equal(await held(), 0, 'then freed')
  const late = await slots.acquire('i.example:80', 0)
  t.equal(late!.session, session, 'the same session takes the next')
  slots.release(late!)
  t.equal(await held(), 1, 'idle again')
  await slots.close()
  t.equal(await held(), 0, 'close frees the idle ones at once')
})

t.test('a slot released while an acquire is asking the database goes to that acquire', async (t) => {
  const slots = worker(1)
  const first = await slots.acquire('k.example:80', 0)
  const next = slots.acquire('k.example:80', 30_000) // finds no idle slot and asks the database
  slots.release(first!) // the host's only slot goes idle while the database answers "full"
  t.equal(await next, first, 'the very slot, not one locked afresh after it lingered and went back')
  slots.release(first!)
})

t.test('a slot released while the database fails to answer is not handed on: its lock may have died with the connection', async (t) => {
  const slots = worker(1, [])
  const first = await slots.acquire('l.example:80', 0)
  await sql`select pg_terminate_backend(${first!.session})`.execute(db)
  const next = slots.acquire('l.example:80', 30_000) // asks the database over the dying connection
  slots.release(first!)
  const slot = await next
  t.ok(slot, 'a slot came once the worker had connected again')
  t.not(slot!.session, first!.session, 'locked on the new connection, not the dead one\'s idle slot')
  slots.release(slot!)
})

t.test('a slot held for a while goes back to the database, so a call waiting at another worker gets a turn', async (t) => {
  const [busy, patient] = [worker(1), worker(1)]
  let slot = await busy.acquire('j.example:80', 0)
  // The first slot came with the session's start, which a busy machine can make take a second: let it
  // go back and take a fresh one, so the turns below start from a slot just taken.
  busy.release(slot!)
  await sleep(450) // past the linger, so the idle slot goes back to the database
  slot = await busy.acquire('j.example:80', 0)
  t.ok(slot, 'the busy worker holds the slot')
  const waiting = patient.acquire('j.example:80', 30_000)
  // The busy worker keeps calling the host: each call hands its slot to the next, for up to 20 s.
  const began = Date.now()
  let turns = 0
  let patientServed = false
  while (Date.now() - began < 20_000) {
    const next = busy.acquire('j.example:80', 30_000)
    busy.release(slot!)
    slot = await Promise.race([next, waiting.then(() => undefined)])
    if (!slot) {
      patientServed = true
      break
    }
    turns += 1
    await sleep(20)
  }
  t.ok(patientServed, `the patient worker got the slot while the busy one kept asking (after ${Date.now() - began} ms and ${turns} of its calls)`)
  t.ok(turns > 0, 'the busy worker had its turns first')
  patient.release((await waiting)!)
})

t.test('at most maxWaiting calls wait at a worker, at every host together: another is turned away, and a full host\'s line has no place', async (t) => {
  const slots = new HostSlots(() => database.session({ timeouts: true }), 1, () => {}, 2)
  t.teardown(() => slots.close())
  const hosts = ['r1.example:80', 'r2.example:80', 'r3.example:80']
  const taken = await Promise.all(hosts.map((host) => slots.acquire(host, 0)))
  t.ok(taken.every(Boolean), 'each host\'s one slot is taken')
  let joined = 0
  const onWait = () => { joined += 1 }
  const waiting = hosts.slice(0, 2).map((host) => slots.acquire(host, 10_000, undefined, { onWait }))
  for (const until = Date.now() + 5000; joined < 2 && Date.now() < until;) await sleep(5)
  t.equal(joined, 2, 'two calls wait, each told so')
  t.equal(slots.placesAt('r3.example:80'), 0, 'a third full host has no place in its line')
  t.equal(await slots.acquire('r3.example:80', 10_000, undefined, { onWait }), undefined, 'a call for it is turned away at once')
  t.equal(joined, 2, 'without joining a line')
  for (const slot of taken) slots.release(slot!)
  for (const slot of await Promise.all(waiting)) slots.release(slot!)
})

t.test('a worker forgets a host once it holds nothing of it and has not found it full lately: its hosts do not pile up', async (t) => {
  const slots = worker(2)
  const hosts = Array.from({ length: 50 }, (_, i) => `forget-${i}.example:80`)
  // Every slot is taken before any is freed: freed one after another, the first went back to the
  // database before the last was taken wherever 50 round trips took longer than the linger.
  const taken: HostSlot[] = []
  for (const host of hosts) taken.push((await slots.acquire(host, 0))!)
  for (const slot of taken) slots.release(slot)
  t.equal([...slots.knownHosts()].length, 50, 'each freed slot lingers for the next call to its host')
  for (const until = Date.now() + 5000; [...slots.knownHosts()].length > 0 && Date.now() < until;) await sleep(20)
  t.same([...slots.knownHosts()], [], 'once the idle slots went back to the database, no host is kept')

  const [holder, other] = [worker(1), worker(1)]
  const held = await holder.acquire('forget-full.example:80', 0)
  t.equal(await other.acquire('forget-full.example:80', 0), undefined, 'the host is full')
  t.equal(other.placesAt('forget-full.example:80'), 1, 'found full lately: still known, a claim leaves it out')
  await sleep(1100) // past FULL_LATELY_MS
  t.equal(other.placesAt('forget-full.example:80'), undefined, 'not found full since: not held back')
  t.same([...other.knownHosts()], [], 'and forgotten')
  holder.release(held!)
})
