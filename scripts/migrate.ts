// `npm run db:migrate`: brings the database (DATABASE_URL, or the embedded one) to the latest schema.
import { loadConfig } from '../src/config.js'
import { openDatabase } from '../src/db/connect.js'
import { migrateToLatest } from '../src/db/migrate.js'

const config = loadConfig(process.env)
const database = await openDatabase(config)
try {
  const applied = await migrateToLatest(database)
  process.stdout.write(applied.length > 0 ? `applied: ${applied.join(', ')}\n` : 'the database is up to date\n')
} finally {
  await database.close()
}
