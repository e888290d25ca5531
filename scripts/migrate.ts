// `npm run db:migrate`: brings the database (DATABASE_URL, or the embedded one) to the latest schema.
import { migrateToLatest } from '../src/db/migrate.js'
import { adminCommand } from './admin-command.js'

await adminCommand(async (database) => {
  const applied = await migrateToLatest(database)
  process.stdout.write(applied.length > 0 ? `applied: ${applied.join(', ')}\n` : 'the database is up to date\n')
})
