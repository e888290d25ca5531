import type { Logger } from 'pino'
import { isDatabaseUnavailable, refusesConnectionSettings, tlsSettingToCorrect } from './db/errors.js'
import { backoffMs } from './lib/backoff.js'

/**
 * SIGTERM, SIGINT or SIGHUP: stop taking work, let what is in flight finish, close, exit 0 (node's
 * default for SIGHUP, a terminal closing on `npm start`, ended the process at once). `close` is told
 * the signal (none after an error): an orchestrator sends SIGTERM, a terminal the other two. A second signal
 * during the drain exits at once with 1. An error nothing caught ends the process the same way,
 * with 1, unless it only says the database is away: that is logged and the process lives on, since
 * every caller that needs the database already retries.
 */
export function onShutdown(log: Logger, hardLimitMs: number, close: (signal?: NodeJS.Signals) => Promise<void>): void {
  let closing = false
  const shutDown = (code: number, signal?: NodeJS.Signals) => {
    if (closing) return
    closing = true
    const limit = setTimeout(() => {
      log.error({ hardLimitMs }, 'shutdown did not finish in time; exiting')
      process.exit(1)
    }, hardLimitMs)
    limit.unref()
    close(signal).then(
      () => process.exit(code),
      (error: unknown) => {
        log.error({ err: error }, 'shutdown failed')
        process.exit(1)
      }
    )
  }
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(signal, () => {
      if (closing) {
        log.warn({ signal }, 'second signal during shutdown; exiting now')
        process.exit(1)
      }
      log.info({ signal }, 'shutting down')
      shutDown(0, signal)
    })
  }
  const onError = (error: unknown) => {
    if (isDatabaseUnavailable(error)) {
      log.warn({ err: error }, 'database error reached the top level; carrying on')
      return
    }
    log.fatal({ err: error }, 'shutting down after an unexpected error')
    shutDown(1)
  }
  process.on('uncaughtException', onError)
  process.on('unhandledRejection', onError)
}

/** Runs a start-up step that needs the database, waiting for the database while it is away. */
export async function whenDatabaseAnswers<T>(log: Logger, what: string, work: () => Promise<T>): Promise<T> {
  for (let retry = 1; ; retry++) {
    try {
      return await work()
    } catch (error) {
      // A user, password or database the server refuses, or a TLS connection DATABASE_URL asks for that
      // cannot be made, is a setting to correct: the start ends naming it.
      if (!isDatabaseUnavailable(error) || refusesConnectionSettings(error) || tlsSettingToCorrect(error)) throw error
      const waitMs = backoffMs({ firstMs: 250, maxMs: 5000 }, retry)
      log.warn({ err: error, retryInMs: waitMs }, `waiting for the database: ${what}`)
      await new Promise((resolve) => setTimeout(resolve, waitMs))
    }
  }
}

/** How often a start that may not migrate looks again for its pending migrations (whenMigrated). */
const MIGRATED_POLL_MS = 2000
/** How often it says it still waits. */
const MIGRATED_WARN_MS = 30_000

/**
 * With BATON_MIGRATE_ON_START=false the migrations are another's to run (`npm run db:migrate`, a
 * deploy's job): a start that finds some of this version's pending waits until they are run, saying
 * which. It went on and served a schema it did not know: every API request that met a missing column
 * answered 500, and the worker logged that column's error every 2 s.
 */
export async function whenMigrated(log: Logger, pending: () => Promise<string[]>, pollMs = MIGRATED_POLL_MS): Promise<void> {
  let saidAt: number | undefined
  for (;;) {
    const names = await whenDatabaseAnswers(log, 'migrations', pending)
    if (names.length === 0) return
    if (saidAt === undefined || Date.now() - saidAt >= MIGRATED_WARN_MS) {
      saidAt = Date.now()
      log.warn({ migrations: names }, `waiting for ${names.length} pending migration${names.length === 1 ? '' : 's'} ` +
        `(${names[0]}${names.length > 1 ? ` to ${names.at(-1)}` : ''}): BATON_MIGRATE_ON_START is false, so run npm run db:migrate`)
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs))
  }
}
