// A transaction's BEGIN goes out with its first statement, and its COMMIT with the statement marked
// THEN_COMMIT (src/db/postgres.ts, pipelined). Watched through the fault proxy, which records the
// statements each round trip carried, and checked where it matters: the first statement runs inside
// the transaction, errors and rollbacks end it, what the marked statement ends is committed, and the
// connection serves the next one.
import t from 'tap'
import { openPostgres } from '../../src/db/connect.js'
import { sql, type QueryResult } from '../../src/db/kysely.js'
import { THEN_COMMIT, createPool } from '../../src/db/postgres.js'
import { runTogether } from '../../src/db/statement.js'
import { startFaultProxy } from '../../scripts/drills/fault-proxy.js'
import { createTestDatabase, databaseUrl } from '../helpers/database.js'

const database = await createTestDatabase()
const proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(databaseUrl(database.name)).port || 5432) })
// One connection, so that a statement prepared by one transaction is prepared for the next.
const handle = openPostgres(proxy.url(databaseUrl(database.name)), { poolMax: 1 })
const db = handle.db
t.teardown(async () => {
  await handle.close()
  await proxy.close()
  await database.drop()
})
await sql`create table notes (id integer primary key, note text not null)`.execute(database.db)

/** What another connection sees: the transaction under test has not committed what it does not. */
async function committed(id: number): Promise<boolean> {
  return (await sql`select 1 from notes where id = ${id}`.execute(database.db)).rows.length > 0
}

/** The statements run while `action` runs, as `roundTrip: text` lines, round trips counted from 1. */
async function roundTrips(action: () => Promise<unknown>): Promise<string[]> {
  const stop = proxy.record()
  let statements: { text: string; roundTrip: number }[] = []
  try {
    await action()
  } finally {
    statements = stop()
  }
  const first = statements[0]?.roundTrip ?? 0
  return statements.map(({ text, roundTrip }) => `${roundTrip - first + 1}: ${text.replace(/\s+/g, ' ').trim()}`)
}

const insert = (id: number) => sql`insert into notes (id, note) values (${id}, ${`note ${id}`})`

t.test('BEGIN and the first statement share a round trip, and the statement runs inside the transaction', async (t) => {
  // The insert's first run on the connection prepares it: BEGIN goes alone (see canPipeline).
  await db.transaction().execute((trx) => insert(1).execute(trx))
  let seenInside: boolean | undefined
  const trips = await roundTrips(() => db.transaction().execute(async (trx) => {
    await insert(2).execute(trx)
    seenInside = await committed(2)
  }))
  t.same(trips, ['1: begin', '1: insert into notes (id, note) values ($1, $2)', '2: commit'])
  t.equal(seenInside, false, 'not visible to others before COMMIT: the insert ran inside the transaction')
  t.ok(await committed(2), 'and visible after it')
})

t.test('a statement new to the connection, or without parameters, has BEGIN sent ahead of it', async (t) => {
  const trips = await roundTrips(() => db.transaction().execute(async (trx) => {
    await sql`insert into notes (id, note) values (${3}, 'three')`.execute(trx)
    await sql`select 1`.execute(trx)
  }))
  t.same(trips, ['1: begin', "2: insert into notes (id, note) values ($1, 'three')", '3: select 1', '4: commit'])
  const plain = await roundTrips(() => db.transaction().execute((trx) => sql`update notes set note = 'plain' where id = 3`.execute(trx)))
  t.same(plain, ['1: begin', "2: update notes set note = 'plain' where id = 3", '3: commit'])
})

t.test('a first statement that fails: its error, the transaction rolled back, the connection usable', async (t) => {
  const trips = await roundTrips(() => t.rejects(db.transaction().execute((trx) => insert(1).execute(trx)), { code: '23505' }))
  t.same(trips, ['1: begin', '1: insert into notes (id, note) values ($1, $2)', '2: rollback'])
  await db.transaction().execute((trx) => insert(4).execute(trx))
  t.ok(await committed(4), 'the next transaction on the same connection commits')
})

t.test('a transaction that gives up after its first statement leaves nothing', async (t) => {
  await t.rejects(db.transaction().execute(async (trx) => {
    await insert(5).execute(trx)
    throw new Error('changed my mind')
  }), /changed my mind/)
  t.notOk(await committed(5))
})

t.test('a transaction that runs nothing sends nothing', async (t) => {
  t.same(await roundTrips(() => db.transaction().execute(async () => {})), [])
  const gaveUp = await roundTrips(() => t.rejects(db.transaction().execute(async () => {
    throw new Error('nothing to do')
  })))
  t.same(gaveUp, [])
  t.equal((await sql<{ one: number }>`select ${1}::int as one`.execute(db)).rows[0]?.one, 1, 'and the connection is not left in a transaction')
  t.same(await roundTrips(() => sql`select ${1}::int as one`.execute(db)), ['1: select $1::int as one'], 'no BEGIN left over')
})

/** An insert that ends its transaction, answering the row it wrote. */
const last = (id: number) => sql<{ id: number }>`insert into notes (id, note) values (${id}, ${`note ${id}`}) returning id ${sql.raw(THEN_COMMIT)}`
const lastText = `insert into notes (id, note) values ($1, $2) returning id ${THEN_COMMIT}`

t.test('the statement marked THEN_COMMIT carries the COMMIT, and Kysely\'s sends nothing', async (t) => {
  await db.transaction().execute((trx) => last(10).execute(trx)) // prepares it on the connection
  t.ok(await committed(10))
  let answer: QueryResult<{ id: number }> | undefined
  const alone = await roundTrips(async () => {
    answer = await db.transaction().execute((trx) => last(11).execute(trx))
  })
  t.same(alone, ['1: begin', `1: ${lastText}`, '1: commit'], 'a transaction of one statement is one round trip')
  t.ok(await committed(11))
  t.same(answer?.rows, [{ id: 11 }], "the statement's own answer, not BEGIN's or COMMIT's")
  t.equal(answer?.numAffectedRows, 1n)

  let seenInside: boolean | undefined
  const two = await roundTrips(() => db.transaction().execute(async (trx) => {
    await insert(12).execute(trx)
    seenInside = await committed(12)
    answer = await last(13).execute(trx)
  }))
  t.same(two, ['1: begin', '1: insert into notes (id, note) values ($1, $2)', `2: ${lastText}`, '2: commit'])
  t.same(answer?.rows, [{ id: 13 }])
  t.equal(answer?.numAffectedRows, 1n)
  t.equal(seenInside, false, 'the first statement ran inside the transaction')
  t.ok(await committed(12) && await committed(13), 'and both are committed together')
})

t.test('a marked statement that fails: its error, the transaction rolled back, the connection usable', async (t) => {
  const trips = await roundTrips(() => t.rejects(db.transaction().execute(async (trx) => {
    await insert(14).execute(trx)
    await last(10).execute(trx) // 10 exists
  }), { code: '23505' }))
  t.same(trips, ['1: begin', '1: insert into notes (id, note) values ($1, $2)', `2: ${lastText}`, '2: commit', '3: rollback'],
    'the server skipped the COMMIT after the error; the rollback ends the transaction')
  t.notOk(await committed(14), 'the statement before it is rolled back')
  await db.transaction().execute((trx) => last(15).execute(trx))
  t.ok(await committed(15), 'the next transaction on the same connection commits')
})

t.test('a marked statement whose values cannot be sent commits nothing', async (t) => {
  // A statement of its own, prepared first, so that it would carry the COMMIT (pg closes a prepared
  // statement whose values it could not bind).
  const update = (id: number, note: unknown) => sql`update notes set note = ${note} where id = ${id} ${sql.raw(THEN_COMMIT)}`
  await db.transaction().execute((trx) => update(10, 'ten').execute(trx))
  const unsendable = { toPostgres: () => { throw new Error('not a value') } }
  await t.rejects(db.transaction().execute(async (trx) => {
    await insert(16).execute(trx)
    await update(10, unsendable).execute(trx)
  }), /not a value/)
  t.notOk(await committed(16), 'no COMMIT went out without the statement')
  await db.transaction().execute((trx) => last(18).execute(trx))
  t.ok(await committed(18), 'and the connection serves the next transaction')
})

t.test('nothing runs after the marked statement; outside a transaction the mark does nothing', async (t) => {
  await t.rejects(db.transaction().execute(async (trx) => {
    await last(19).execute(trx)
    await insert(20).execute(trx)
  }), /after the one that ended its transaction/)
  t.ok(await committed(19), 'what the marked statement ended is committed')
  t.notOk(await committed(20), 'the statement after it was not sent')
  t.same(await roundTrips(() => last(21).execute(db)), [`1: ${lastText}`], 'no COMMIT without a transaction')
  t.ok(await committed(21))
  t.same(await roundTrips(() => db.transaction().execute((trx) => insert(22).execute(trx))),
    ['1: begin', '1: insert into notes (id, note) values ($1, $2)', '2: commit'], 'the next transaction is as ever')
})

t.test('a marked statement new to the connection runs between a BEGIN and a COMMIT of their own', async (t) => {
  const fresh = (id: number) => sql`insert into notes (id, note) values (${id}, ${'fresh'}) ${sql.raw(THEN_COMMIT)}`
  const freshText = `insert into notes (id, note) values ($1, $2) ${THEN_COMMIT}`
  t.same(await roundTrips(() => db.transaction().execute((trx) => fresh(23).execute(trx))),
    ['1: begin', `2: ${freshText}`, '3: commit'], 'it is prepared on the way; nothing is lost')
  t.ok(await committed(23))
  t.same(await roundTrips(() => db.transaction().execute((trx) => fresh(24).execute(trx))),
    ['1: begin', `1: ${freshText}`, '1: commit'], 'once prepared, it carries both')
  t.ok(await committed(24))
})

t.test('a COMMIT that fails: its error, nothing committed, the connection usable', async (t) => {
  // A deferred unique constraint is checked at COMMIT, after the marked statement succeeded.
  await sql`create table pairs (id integer, constraint pairs_id unique (id) deferrable initially deferred)`.execute(database.db)
  const pair = (id: number, marked: boolean) => sql`insert into pairs (id) values (${id}) ${sql.raw(marked ? THEN_COMMIT : '')}`
  const both = (first: number, second: number) => db.transaction().execute(async (trx) => {
    await pair(first, false).execute(trx)
    await pair(second, true).execute(trx)
  })
  await both(1, 2) // prepares both statements on the connection
  const trips = await roundTrips(() => t.rejects(both(3, 3), { code: '23505' }))
  t.same(trips, ['1: begin', '1: insert into pairs (id) values ($1)', `2: insert into pairs (id) values ($1) ${THEN_COMMIT}`, '2: commit', '3: rollback'],
    "COMMIT's error is the statement's; the ROLLBACK after it finds nothing to end")
  const ids = await sql<{ id: number }>`select id from pairs order by id`.execute(database.db)
  t.same(ids.rows.map((row) => row.id), [1, 2], 'neither row of the failed transaction is there')
  await both(4, 5)
  t.same((await sql<{ n: number }>`select count(*)::int as n from pairs`.execute(database.db)).rows[0]?.n, 4, 'the connection serves the next transaction')
})

t.test('statements sent together: the one after the marked statement is refused, not run after the COMMIT', async (t) => {
  let refused: unknown
  await db.transaction().execute(async (trx) => {
    await insert(30).execute(trx)
    const [marked, alongside] = await Promise.allSettled([last(31).execute(trx), insert(32).execute(trx)])
    t.equal(marked.status, 'fulfilled')
    refused = alongside.status === 'rejected' ? alongside.reason : undefined
  })
  t.match(refused, /after the one that ended its transaction/)
  t.ok(await committed(30) && await committed(31), 'the transaction committed')
  t.notOk(await committed(32), 'the statement alongside did not run on its own')
})

t.test('a connection given back inside a transaction is closed, not handed out again', async (t) => {
  const pool = createPool(databaseUrl(database.name), { poolMax: 1, statementTimeoutMs: 0, connectTimeoutMs: 5_000, prepareStatements: true })
  t.teardown(() => pool.end())
  const backend = async (client: Awaited<ReturnType<typeof pool.connect>>) =>
    (await client.query<{ pid: number }>('select pg_backend_pid() as pid, $1::int as one', [1])).rows[0]?.pid
  const first = await pool.connect()
  await first.query('begin', []) // Kysely's BEGIN: it goes out with the next statement
  const inside = await backend(first)
  first.release()
  const second = await pool.connect()
  t.not(await backend(second), inside, 'a new connection, not one whose transaction is still open')
  second.release()
  const third = await pool.connect()
  const idle = await backend(third)
  third.release()
  const fourth = await pool.connect()
  t.equal(await backend(fourth), idle, 'a connection given back outside a transaction is reused')
  fourth.release()
})

t.test('statements sent together (runTogether)', async (t) => {
  await sql`insert into notes (id, note) values (40, 'forty'), (41, 'forty-one')`.execute(database.db)
  const lockText = 'select id from notes where id = $1 for update'
  const readText = 'select note from notes where id = $1'
  const pair = (lockId: number, readId: number) => [{ text: lockText, values: [lockId] }, { text: readText, values: [readId] }]

  t.test('once prepared on the connection, one round trip with BEGIN; before that, one at a time', async (t) => {
    const first = await roundTrips(() => db.transaction().execute((trx) => runTogether(trx, pair(40, 41))))
    t.same(first, ['1: begin', `2: ${lockText}`, `3: ${readText}`, '4: commit'], 'their first run prepares them')
    let rows: unknown[][] = []
    const trips = await roundTrips(async () => {
      rows = await db.transaction().execute((trx) => runTogether(trx, pair(40, 41)))
    })
    t.same(trips, ['1: begin', `1: ${lockText}`, `1: ${readText}`, '2: commit'])
    t.same(rows, [[{ id: 40 }], [{ note: 'forty-one' }]], 'each statement\'s rows, in order')
    const inside = await roundTrips(() => db.transaction().execute(async (trx) => {
      await insert(42).execute(trx)
      rows = await runTogether(trx, pair(42, 42))
    }))
    t.same(inside, ['1: begin', '1: insert into notes (id, note) values ($1, $2)', `2: ${lockText}`, `2: ${readText}`, '3: commit'], 'later in a transaction')
    t.same(rows, [[{ id: 42 }], [{ note: 'note 42' }]], 'the statements run inside it')
  })

  t.test('the statement after a lock reads what the lock\'s holder committed while it waited', async (t) => {
    const other = openPostgres(databaseUrl(database.name), { poolMax: 1 })
    t.teardown(() => other.close())
    let unlock = () => {}
    let holding = () => {}
    const held = new Promise<void>((resolve) => (holding = resolve))
    const holder = other.db.transaction().execute(async (trx) => {
      await sql`select id from notes where id = 40 for update`.execute(trx)
      await sql`update notes set note = 'changed by the holder' where id = 41`.execute(trx)
      holding()
      await new Promise<void>((resolve) => (unlock = resolve))
    })
    await held
    const stop = proxy.record()
    const together = db.transaction().execute((trx) => runTogether(trx, pair(40, 41)))
    // A single statement locking 40 and reading 41 would read 41 as of before its wait.
    const single = sql<{ note: string }>`
      select (select note from notes where id = 41) as note from notes where id = 40 for update`.execute(database.db)
    // Both wait for the lock before the holder lets go.
    const waiting = async () => (await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock'`.execute(database.db)).rows[0]?.n ?? 0
    while (await waiting() < 2) await new Promise((resolve) => setImmediate(resolve))
    unlock()
    await holder
    t.same((await together)[1], [{ note: 'changed by the holder' }], 'sent together: the read after the lock sees the change')
    const sent = stop().filter(({ text }) => text === lockText || text === readText)
    t.equal(new Set(sent.map(({ roundTrip }) => roundTrip)).size, 1, 'in one round trip')
    t.same((await single).rows, [{ note: 'forty-one' }], 'one statement does not (the reason for two)')
    await sql`update notes set note = 'forty-one' where id = 41`.execute(database.db)
  })

  t.test('a statement that fails: its error, the ones after it not run, the transaction rolled back, the connection usable', async (t) => {
    const insertText = 'insert into notes (id, note) values ($1, $2) returning id'
    const inserts = (a: number, b: number) => [{ text: insertText, values: [a, `note ${a}`] }, { text: insertText, values: [b, `note ${b}`] }]
    await db.transaction().execute((trx) => runTogether(trx, inserts(43, 44))) // prepares it
    const firstFails = await roundTrips(() => t.rejects(db.transaction().execute((trx) => runTogether(trx, inserts(40, 45))), { code: '23505' }))
    t.same(firstFails, ['1: begin', `1: ${insertText}`, `1: ${insertText}`, '2: rollback'])
    t.notOk(await committed(45), 'the statement after it did not run')
    await t.rejects(db.transaction().execute((trx) => runTogether(trx, inserts(46, 40))), { code: '23505' }, 'the second fails')
    t.notOk(await committed(46), 'the first is rolled back')
    t.same(await db.transaction().execute((trx) => runTogether(trx, inserts(47, 48))), [[{ id: 47 }], [{ id: 48 }]], 'the connection serves the next')
    t.ok(await committed(47) && await committed(48))
  })

  t.test('a later statement whose values cannot be sent: nothing sent, nothing committed', async (t) => {
    const unsendable = { toPostgres: () => { throw new Error('not a value') } }
    const trips = await roundTrips(() => t.rejects(db.transaction().execute(async (trx) => {
      await insert(49).execute(trx)
      await runTogether(trx, [{ text: lockText, values: [40] }, { text: readText, values: [unsendable] }])
    }), /not a value/))
    t.same(trips, ['1: begin', '1: insert into notes (id, note) values ($1, $2)', '2: rollback'])
    t.notOk(await committed(49))
  })

  t.test('the last statement marked THEN_COMMIT carries the COMMIT', async (t) => {
    const markedText = `insert into notes (id, note) values ($1, $2) returning id ${THEN_COMMIT}`
    const statements = (id: number) => [{ text: lockText, values: [40] }, { text: markedText, values: [id, `note ${id}`] }]
    await db.transaction().execute((trx) => runTogether(trx, statements(50))) // prepares them
    const trips = await roundTrips(() => db.transaction().execute((trx) => runTogether(trx, statements(51))))
    t.same(trips, ['1: begin', `1: ${lockText}`, `1: ${markedText}`, '1: commit'], 'a transaction of one round trip')
    t.ok(await committed(50) && await committed(51))
  })

  t.test('a lock another transaction holds (NOWAIT): its error, the read after it not run', async (t) => {
    const nowait = 'select id from notes where id = $1 for update nowait'
    const statements = [{ text: nowait, values: [40] }, { text: 'update notes set note = $2 where id = $1', values: [41, 'not run'] }]
    await db.transaction().execute((trx) => runTogether(trx, statements)) // prepares them
    await sql`update notes set note = 'forty-one' where id = 41`.execute(database.db)
    const other = openPostgres(databaseUrl(database.name), { poolMax: 1 })
    t.teardown(() => other.close())
    await other.db.transaction().execute(async (trx) => {
      await sql`select id from notes where id = 40 for update`.execute(trx)
      const trips = await roundTrips(() => t.rejects(db.transaction().execute((trx) => runTogether(trx, statements)), { code: '55P03' }))
      t.same(trips, ['1: begin', `1: ${nowait}`, '1: update notes set note = $2 where id = $1', '2: rollback'])
    })
    t.same((await sql<{ note: string }>`select note from notes where id = 41`.execute(database.db)).rows, [{ note: 'forty-one' }], 'the update after it did not run')
  })

  t.test('three statements, the middle one without rows', async (t) => {
    const update = 'update notes set note = $2 where id = $1'
    const statements = (note: string) => [{ text: lockText, values: [40] }, { text: update, values: [41, note] }, { text: readText, values: [41] }]
    await db.transaction().execute((trx) => runTogether(trx, statements('first')))
    let rows: unknown[][] = []
    const trips = await roundTrips(async () => {
      rows = await db.transaction().execute((trx) => runTogether(trx, statements('second')))
    })
    t.same(trips, ['1: begin', `1: ${lockText}`, `1: ${update}`, `1: ${readText}`, '2: commit'])
    t.same(rows, [[{ id: 40 }], [], [{ note: 'second' }]], 'each statement\'s rows, none for the update; the read sees it')
    await sql`update notes set note = 'forty-one' where id = 41`.execute(database.db)
  })

  t.test('without prepared statements: one round trip from the first run (unnamed statements)', async (t) => {
    const unnamed = openPostgres(proxy.url(databaseUrl(database.name)), { poolMax: 1, prepareStatements: false })
    t.teardown(() => unnamed.close())
    let rows: unknown[][] = []
    const trips = await roundTrips(async () => {
      rows = await unnamed.db.transaction().execute((trx) => runTogether(trx, pair(40, 41)))
    })
    t.same(trips, ['1: begin', `1: ${lockText}`, `1: ${readText}`, '2: commit'])
    t.same(rows, [[{ id: 40 }], [{ note: 'forty-one' }]])
  })

  t.test('as a transaction\'s first statements, a value that cannot be sent: nothing at all goes out', async (t) => {
    await db.transaction().execute((trx) => runTogether(trx, pair(40, 41))) // prepared
    const unsendable = { toPostgres: () => { throw new Error('not a value') } }
    const trips = await roundTrips(() => t.rejects(db.transaction().execute((trx) =>
      runTogether(trx, [{ text: lockText, values: [40] }, { text: readText, values: [unsendable] }])), /not a value/))
    t.same(trips, [], 'no BEGIN, and so no ROLLBACK')
    t.same(await db.transaction().execute((trx) => runTogether(trx, pair(40, 41))), [[{ id: 40 }], [{ note: 'forty-one' }]], 'the connection serves the next')
  })

  t.test('refused: outside a transaction, and a COMMIT before the last statement', async (t) => {
    await t.rejects(runTogether(db, pair(40, 41)), /belong to a transaction/)
    const marked = `select id from notes where id = $1 ${THEN_COMMIT}`
    await t.rejects(db.transaction().execute((trx) => runTogether(trx, [{ text: marked, values: [40] }, { text: readText, values: [41] }])), /Only the last/)
  })
  t.end()
})
