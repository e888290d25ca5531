import { randomBytes } from 'node:crypto'
import t from 'tap'
import { ConfigError } from '../../src/config.js'
import { openPostgres, type DatabaseHandle } from '../../src/db/connect.js'
import { sql } from '../../src/db/kysely.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { refuseSharedSessions, sessionMoves } from '../../src/db/own-session.js'
import { adminQuery, createTestDatabase, databaseUrl } from '../helpers/database.js'

/**
 * What a connection pooler in transaction mode makes of a session: its statements take whichever
 * server connection of a shared pool is free, the one another client's transaction had last or runs
 * next. Here the shared pool is the handle's own.
 */
function behindTransactionPooler(handle: DatabaseHandle): DatabaseHandle {
  return {
    ...handle,
    session: () => Promise.resolve({ db: handle.db, onLost: () => {}, close: () => Promise.resolve() })
  }
}

t.test('a session of its own stays put; one whose statements share the server connections of others is found out', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const own = await database.session({ timeouts: true })
  t.teardown(() => own.close())
  t.equal(await sessionMoves(database, own), undefined, 'a direct connection keeps its session')

  const pooled = behindTransactionPooler(database)
  const moved = await sessionMoves(pooled, await pooled.session({ timeouts: true }))
  t.ok(moved && 'shared' in moved, 'another connection\'s transaction ran in the backend the session had just used')
})

t.test('a worker starts over sessions of its own, and is refused through a pooler in transaction mode', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  await refuseSharedSessions(database)
  const refused = await refuseSharedSessions(behindTransactionPooler(database)).then(() => undefined, (error: unknown) => error)
  t.ok(refused instanceof ConfigError, 'a setting to correct, which the start prints as it is')
  t.match((refused as Error).message, /^DATABASE_URL: the worker needs database sessions of its own, and another connection's transaction ran in the database session \(backend \d+\)/)
  t.match((refused as Error).message, /pool_mode = transaction.*per-host slots.*directly or through a pooler in session mode.*--role=api.*DATABASE_PREPARED_STATEMENTS=false/)
})

t.test('migrations through a pooler in transaction mode are refused before their lock is taken', async (t) => {
  const name = `baton_pooled_${randomBytes(4).toString('hex')}`
  await adminQuery(`create database ${name}`)
  const handle = openPostgres(databaseUrl(name), { poolMax: 4 })
  t.teardown(async () => {
    await handle.close()
    await adminQuery(`drop database if exists ${name} with (force)`)
  })
  const refused = await migrateToLatest(behindTransactionPooler(handle)).then(() => undefined, (error: unknown) => error)
  t.ok(refused instanceof ConfigError, 'a setting to correct, which the start and db:migrate print as it is')
  t.match((refused as Error).message, /migrations need a database session of their own.*pool_mode = transaction.*npm run db:migrate.*BATON_MIGRATE_ON_START=false/)
  const { rows } = await sql<{ tables: number; locks: number }>`
    select (select count(*)::int from pg_tables where schemaname = 'public') as tables,
           (select count(*)::int from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())) as locks
  `.execute(handle.db)
  t.same(rows[0], { tables: 0, locks: 0 }, 'nothing migrated, no lock left behind')

  t.same((await migrateToLatest(handle)).slice(0, 1), ['0001_initial'], 'over a session of its own the same database migrates')
})
