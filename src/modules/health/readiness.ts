import type { Kysely } from '../../db/kysely.js'
import type { DB } from '../../db/connect.js'
import { databaseTlsProblem, isPoolWait } from '../../db/errors.js'
import { pendingMigrations } from '../../db/migrate.js'
import { poolState } from '../../db/postgres.js'
import { pingDatabase } from './repository.js'

/** Why the process is not ready; `error` is what the database said, for the log. */
export interface Unready {
  detail: string
  error?: unknown
}

const READ_ONLY = 'The database takes no writes (read-only): DATABASE_URL may name a standby, or the database has default_transaction_read_only on.'

// Which check failed stays in the log: the probe is public.
const NO_TLS = 'The database cannot be reached over TLS as DATABASE_URL asks (its certificate refused, or no TLS taken); the log says why.'

const isReadOnly = (error: unknown) => (error as { code?: unknown } | undefined)?.code === '25006'

// A probe must answer in time even when the database hangs instead of refusing.
const READY_CHECK_MS = 2000

/**
 * Ready when the process is not stopping and the database answers and is fully migrated (once seen
 * migrated, only the ping is repeated). A stopping process drains: a load balancer stops routing to it.
 */
export function readinessCheck(db: DB, stopping: () => boolean = () => false): () => Promise<Unready | undefined> {
  let migrated = false
  return async () => {
    if (stopping()) return { detail: 'Baton is stopping: it finishes the work in flight, then exits. Send requests to another instance.' }
    try {
      await withinMs(READY_CHECK_MS, async () => {
        await pingDatabase(db)
        migrated ||= (await pendingMigrations(db as unknown as Kysely<unknown>)).length === 0
      })
    } catch (error) {
      if (isReadOnly(error)) return { detail: READ_ONLY, error }
      if (databaseTlsProblem(error) !== undefined) return { detail: NO_TLS, error }
      const pool = poolState(db)
      if (pool && pool.idle === 0 && pool.total >= pool.max && (pool.waiting > 0 || isPoolWait(error))) return { detail: busy(pool.max), error }
      return { detail: 'The database is not reachable.', error }
    }
    return migrated ? undefined : { detail: 'Database migrations are pending.' }
  }
}

/**
 * Every connection of the pool taken, and none free in time: the database may answer, but what this
 * process asked of it waits. Said as "not reachable", an operator's LOCK TABLE on a hot table sent
 * them after the network and the server (a probe: 40 clients, a pool of 10, the lock held 7 s); a
 * server that swallows the statements (a black hole) fills the pool the same way, and from here the
 * two look alike.
 */
function busy(max: number): string {
  return `All ${max} database connections of this process are taken and none came free in time: their statements wait, `
    + 'for a lock another session holds on a table Baton uses (LOCK TABLE, ALTER TABLE, VACUUM FULL, CREATE INDEX without '
    + 'CONCURRENTLY), or for a server that does not answer; pg_stat_activity, from another connection, tells which.'
}

async function withinMs(ms: number, check: () => Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)
  })
  try {
    await Promise.race([check(), late])
  } finally {
    clearTimeout(timer)
  }
}
