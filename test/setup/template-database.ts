// Runs once before the test files (tap's `before`): builds the migrated template they clone.
import { openPostgres } from '../../src/db/connect.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { TEMPLATE_DATABASE, adminQuery, databaseUrl } from '../helpers/database.js'

await adminQuery(`drop database if exists ${TEMPLATE_DATABASE} with (force)`)
await adminQuery(`create database ${TEMPLATE_DATABASE}`)
const handle = openPostgres(databaseUrl(TEMPLATE_DATABASE), 1)
try {
  await migrateToLatest(handle)
} finally {
  await handle.close()
}
