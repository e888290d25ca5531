import type { Kysely } from '../../db/kysely.js'
import type { DB } from '../../db/connect.js'
import { databaseTlsProblem } from '../../db/errors.js'
import { pendingMigrations } from '../../db/migrate.js'
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
      return { detail: 'The database is not reachable.', error }
    }
    return migrated ? undefined : { detail: 'Database migrations are pending.' }
  }
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
