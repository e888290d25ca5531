// The frame of the operator's commands (`npm run db:migrate`, `admin:rotate-key`, `secrets:reencrypt`):
// the settings read and the database opened as the server does, closed again, and a wrong setting,
// a database that refuses DATABASE_URL or does not answer, an embedded data dir in use or an argument
// (they take none) answered with its message alone and exit code 1, not a stack trace.
import { asDatabaseUrlProblem, ConfigError, loadConfig, type Config } from '../src/config.js'
import { DataDirBusyError, openDatabase, type DatabaseHandle } from '../src/db/connect.js'
import { isDatabaseUnavailable, isStatementTimeout, unavailableReason } from '../src/db/errors.js'
import type { Kysely } from '../src/db/kysely.js'
import { pendingMigrations } from '../src/db/migrate.js'

export async function adminCommand(
  work: (database: DatabaseHandle, config: Config) => Promise<void>,
  options: { check?: (config: Config) => void; told?: (error: unknown) => boolean; migrated?: boolean } = {}
): Promise<void> {
  try {
    // `npm run admin:rotate-key -- --help` replaced the operator key, and `db:migrate -- --down` migrated up.
    const [argument] = process.argv.slice(2)
    if (argument !== undefined) throw new ConfigError(`unknown argument "${argument}": this command takes no arguments; it reads its settings from the environment, as Baton does`)
    const config = loadConfig(process.env)
    options.check?.(config)
    const database = await openDatabase(config)
    try {
      if (options.migrated) await refuseUnmigrated(database)
      await work(database, config)
    } finally {
      await database.close()
    }
  } catch (caught) {
    const error = unanswered(asDatabaseUrlProblem(caught))
    const told = error instanceof ConfigError || error instanceof DataDirBusyError || (error instanceof Error && options.told?.(error) === true)
    if (!told || !(error instanceof Error)) throw error
    process.stderr.write(`${error.message}\n`)
    process.exit(1)
  }
}

/**
 * A database that did not answer (a server down, DATABASE_URL naming the wrong host or port), as what to
 * check: the server waits for it at its start, a command stops. It printed node-postgres's stack trace.
 */
export function unanswered(error: unknown): unknown {
  if (error instanceof ConfigError || !(error instanceof Error) || !isDatabaseUnavailable(error)) return error
  const reason = unavailableReason(error)
  const advice = reason === 'the database did not answer' ? 'check that the database server runs and that DATABASE_URL names it, then run this command again'
    : isStatementTimeout(error) ? 'run it again with more time, e.g. DATABASE_STATEMENT_TIMEOUT_MS=600000'
      : 'run this command again shortly'
  // A host name with two addresses (localhost: ::1 and 127.0.0.1) fails as an AggregateError without a message of its own.
  const told = error.message || (error instanceof AggregateError ? error.errors.map((e: unknown) => (e instanceof Error ? e.message : String(e))).join('; ') : '') || error.name
  return new ConfigError(`${reason[0]!.toUpperCase()}${reason.slice(1)} (${told}): ${advice}.`, { cause: error })
}

/**
 * A command that reads Baton's tables on a database without them (an empty one, before the first start)
 * or without this version's latest: it printed Postgres's `relation "…" does not exist` with a stack trace.
 */
async function refuseUnmigrated(database: DatabaseHandle): Promise<void> {
  const pending = await pendingMigrations(database.db as unknown as Kysely<unknown>)
  if (pending.length === 0) return
  throw new ConfigError(`The database lacks ${pending.length === 1 ? 'a migration' : `${pending.length} migrations`} of this version of Baton (${pending[0]}${pending.length > 1 ? ', …' : ''}): `
    + 'run `npm run db:migrate` (or start Baton, which migrates), then this command again.')
}
