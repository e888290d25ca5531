// The frame of the operator's commands (`npm run db:migrate`, `admin:rotate-key`, `secrets:reencrypt`):
// the settings read and the database opened as the server does, closed again, and a wrong setting,
// a database that refuses DATABASE_URL, an embedded data dir in use or an argument (they take none)
// answered with its message alone and exit code 1, not a stack trace.
import { asDatabaseUrlProblem, ConfigError, loadConfig, type Config } from '../src/config.js'
import { DataDirBusyError, openDatabase, type DatabaseHandle } from '../src/db/connect.js'

export async function adminCommand(
  work: (database: DatabaseHandle, config: Config) => Promise<void>,
  options: { check?: (config: Config) => void; told?: (error: unknown) => boolean } = {}
): Promise<void> {
  try {
    // `npm run admin:rotate-key -- --help` replaced the operator key, and `db:migrate -- --down` migrated up.
    const [argument] = process.argv.slice(2)
    if (argument !== undefined) throw new ConfigError(`unknown argument "${argument}": this command takes no arguments; it reads its settings from the environment, as Baton does`)
    const config = loadConfig(process.env)
    options.check?.(config)
    const database = await openDatabase(config)
    try {
      await work(database, config)
    } finally {
      await database.close()
    }
  } catch (caught) {
    const error = asDatabaseUrlProblem(caught)
    const told = error instanceof ConfigError || error instanceof DataDirBusyError || (error instanceof Error && options.told?.(error) === true)
    if (!told || !(error instanceof Error)) throw error
    process.stderr.write(`${error.message}\n`)
    process.exit(1)
  }
}
