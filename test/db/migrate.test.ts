import { randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import t from 'tap'
import { openPostgres } from '../../src/db/connect.js'
import { pendingMigrations } from '../../src/db/migrate.js'
import { adminQuery, databaseUrl } from '../helpers/database.js'
import { runScript } from '../helpers/process.js'

t.test('two processes migrating one empty database at once both succeed', async (t) => {
  const name = `baton_migrate_${randomBytes(4).toString('hex')}`
  await adminQuery(`create database ${name}`)
  t.teardown(() => adminQuery(`drop database if exists ${name} with (force)`))
  const env = { DATABASE_URL: databaseUrl(name) }

  const runs = [runScript('scripts/migrate.ts', env), runScript('scripts/migrate.ts', env)]
  const codes = await Promise.all(runs.map((r) => r.exited))
  t.same(codes, [0, 0], runs.map((r) => r.output()).join('\n'))
  t.equal(runs.filter((r) => /applied: 0001_initial, 0002_work_notifications/.test(r.output())).length, 1, 'one of them applied the migration')
  t.equal(runs.filter((r) => /up to date/.test(r.output())).length, 1, 'the other found nothing to do')

  const handle = openPostgres(databaseUrl(name), { poolMax: 1 })
  t.teardown(() => handle.close())
  t.same(await pendingMigrations(handle.db as never), [])
  const { rows } = await sql<{ indexname: string }>`select indexname from pg_indexes where indexdef like '% WHERE %'`.execute(handle.db)
  t.ok(rows.some((r) => r.indexname === 'deliveries_due_idx'), 'the scheduler\'s partial indexes exist')
})
