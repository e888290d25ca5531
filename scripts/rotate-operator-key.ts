// `npm run admin:rotate-key`: replaces the generated operator key (when BATON_ADMIN_TOKEN is unset).
import { asDatabaseUrlProblem, ConfigError, loadConfig } from '../src/config.js'
import { DataDirBusyError, openDatabase } from '../src/db/connect.js'
import { rotateOperatorKey } from '../src/modules/auth/operator-key.js'

try {
  const config = loadConfig(process.env)
  const database = await openDatabase(config)
  try {
    const key = await rotateOperatorKey(database.db)
    process.stdout.write(`New operator key (shown once; restart Baton to use it):\n\n  export BATON_ADMIN_TOKEN=${key}\n\n`)
  } finally {
    await database.close()
  }
} catch (caught) {
  const error = asDatabaseUrlProblem(caught)
  if (!(error instanceof ConfigError || error instanceof DataDirBusyError)) throw error
  process.stderr.write(`${error.message}\n`)
  process.exit(1)
}
