// `npm run db:migrate`: brings the database (DATABASE_URL, or the embedded one) to the latest schema.
import { asDatabaseUrlProblem, ConfigError, loadConfig } from '../src/config.js'
import { DataDirBusyError, openDatabase } from '../src/db/connect.js'
import { migrateToLatest } from '../src/db/migrate.js'

try {
  const config = loadConfig(process.env)
  const database = await openDatabase(config)
  try {
    const applied = await migrateToLatest(database)
    process.stdout.write(applied.length > 0 ? `applied: ${applied.join(', ')}\n` : 'the database is up to date\n')
  } finally {
    await database.close()
  }
} catch (caught) {
  const error = asDatabaseUrlProblem(caught)
  if (!(error instanceof ConfigError || error instanceof DataDirBusyError)) throw error
  process.stderr.write(`${error.message}\n`)
  process.exit(1)
}
