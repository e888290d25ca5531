import { ConfigError } from '../config.js'
import { sql } from './kysely.js'
import type { DatabaseHandle, DB, Session } from './connect.js'

/** How many times the check looks before it takes a session that stayed put for one of its own. */
const TRIES = 3

/** What showed that a connection's statements do not keep to one database session. */
export type MovedSession =
  /** Another connection's transaction ran in the backend this connection's statement had just run in. */
  | { shared: number }
  /** This connection's statements ran in two backends, without a reconnect. */
  | { first: number; then: number }

const backendPid = async (db: DB): Promise<number> => (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(db)).rows[0]!.pid

/**
 * Whether the statements of `session` ran in different database sessions: a connection pooler in
 * transaction (or statement) mode between Baton and Postgres (PgBouncer's `pool_mode = transaction`)
 * hands each transaction to whichever server connection is free, and one of another client next.
 * Session-level advisory locks (a worker's per-host slots, the migrations' lock) then stay behind on
 * a server connection that other clients' transactions run on, the lock's release runs on another
 * (and fails), and a LISTEN is dropped without a word. A pooler in session mode keeps a server
 * connection for the client's whole life, as a direct connection does.
 *
 * The session asks for its backend; a transaction on the handle's pool then asks for its own: a
 * pooler hands it the server connection the session's statement has just given back (PgBouncer
 * reuses the last one given back first), which on a session of its own is never free. If another
 * client took that one first, the session asks again while the transaction holds its server
 * connection. Undefined when the session stayed put every time (a direct connection, session mode).
 * Only for Postgres: the embedded database's session shares its one connection.
 */
export async function sessionMoves(handle: DatabaseHandle, session: Session): Promise<MovedSession | undefined> {
  for (let i = 0; i < TRIES; i++) {
    const first = await backendPid(session.db)
    const moved = await handle.db.transaction().execute(async (trx) => {
      const other = await backendPid(trx)
      if (other === first) return { shared: first }
      const again = await backendPid(session.db)
      return again === first ? undefined : { first, then: again }
    })
    if (moved) return moved
  }
  return undefined
}

/** What a pooler in transaction mode costs, for the messages of those that refuse one. */
export function movedSessionProblem(moved: MovedSession): string {
  const seen = 'shared' in moved
    ? `another connection's transaction ran in the database session (backend ${moved.shared}) that one of this connection's statements had just run in`
    : `this connection's statements ran in different database sessions (backends ${moved.first} and ${moved.then})`
  return `${seen}, as they do through a connection pooler in transaction or statement mode (PgBouncer's pool_mode = transaction)`
}

/**
 * A worker holds its per-host slots as session advisory locks and hears of new work through LISTEN:
 * through a pooler in transaction mode the slots limited nothing (5 calls at once at a host limited
 * to 1, two workers through PgBouncer 1.18), a slot stayed locked on a server connection other
 * clients use after the workers had stopped, and no NOTIFY arrived; nothing was logged. So its start
 * ends, saying how to connect it.
 */
export async function refuseSharedSessions(database: DatabaseHandle): Promise<void> {
  const session = await database.session({ timeouts: true })
  try {
    const moved = await sessionMoves(database, session)
    if (!moved) return
    throw new ConfigError(`DATABASE_URL: the worker needs database sessions of its own, and ${movedSessionProblem(moved)}. ` +
      'Its per-host slots are session advisory locks, which would limit nothing and stay behind on server connections other clients use, ' +
      'and its LISTEN would hear of no new work. Connect the worker to Postgres directly or through a pooler in session mode; ' +
      'an API process alone (--role=api) may go through transaction mode, with DATABASE_PREPARED_STATEMENTS=false')
  } finally {
    await session.close()
  }
}
