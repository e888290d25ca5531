import t from 'tap'
import { ConfigError } from '../../src/config.js'
import type { DatabaseHandle } from '../../src/db/connect.js'
import { refuseSharedSessions, sessionMoves } from '../../src/db/own-session.js'
import { createTestDatabase } from '../helpers/database.js'

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
