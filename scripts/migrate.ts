// `npm run db:migrate`: brings the database (DATABASE_URL, or the embedded one) to the latest schema.
import type { Kysely } from '../src/db/kysely.js'
import { migrateToLatest, unknownMigrations, UnknownMigrationsError, UnrecordedSchemaError } from '../src/db/migrate.js'
import { checkEncoding } from '../src/db/encoding.js'
import { adminCommand } from './admin-command.js'

await adminCommand(async (database) => {
  const encoding = database.kind === 'postgres' ? await checkEncoding(database.db) : undefined
  if (encoding) process.stderr.write(`warning: ${encoding}\n`)
  const applied = await migrateToLatest(database)
  if (applied.length > 0) {
    process.stdout.write(`applied: ${applied.join(', ')}\n`)
    return
  }
  // A newer Baton's migrations are left as they are (its processes may still run beside this version's), but said.
  const newer = await unknownMigrations(database.db as unknown as Kysely<unknown>)
  process.stdout.write(newer.length === 0 ? 'the database is up to date\n'
    : `the database is up to date, and ahead: it holds migrations this version of Baton does not have (${newer.join(', ')}), run by a newer version\n`)
}, { told: (error) => error instanceof UnknownMigrationsError || error instanceof UnrecordedSchemaError })
