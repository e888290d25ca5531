// Runs once before the test files (started by before.ts, tap's `before`). It bundles typebox for them
// (typebox-bundle.ts), strips the types of the tree's TypeScript into the tests' loader's cache in one
// go (ts-hooks.mjs), and builds the migrated template they clone, unless a template of the same migrations exists. That
// is built under another name and renamed when done, so a concurrent run never clones a
// half-migrated template.
import pg from 'pg'
import { openPostgres } from '../../src/db/connect.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { ADMIN_URL, TEMPLATE_DATABASE, databaseUrl } from '../helpers/database.js'
import { fillCache } from './ts-hooks.mjs'
import { bundleTypebox } from './typebox-bundle.js'

await bundleTypebox()
await fillCache()

const admin = new pg.Client({ connectionString: ADMIN_URL })
await admin.connect()
try {
  await admin.query('select pg_advisory_lock(7202612)')
  const exists = await admin.query('select 1 from pg_database where datname = $1', [TEMPLATE_DATABASE])
  if (exists.rowCount === 0) {
    const building = `${TEMPLATE_DATABASE}_building`
    await admin.query(`drop database if exists ${building} with (force)`)
    await admin.query(`create database ${building}`)
    const handle = openPostgres(databaseUrl(building), { poolMax: 1 })
    try {
      await migrateToLatest(handle)
    } finally {
      await handle.close()
    }
    await admin.query(`alter database ${building} rename to ${TEMPLATE_DATABASE}`)
  }
} finally {
  await admin.end()
}
