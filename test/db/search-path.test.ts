// A database or role whose search_path does not reach the schema Baton's tables are in (`ALTER DATABASE … SET
// search_path = crm`, a DBA's tidy-up): the start, with or without its migrations, and db:migrate stop naming the
// schema and how to reach it. Before, the migrations found no record of theirs, began again and stopped at
// Kysely's 'relation "kysely_migration_lock" does not exist', which a start that did not migrate stopped at too.
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import t from 'tap'
import { ConfigError } from '../../src/config.js'
import { openPostgres } from '../../src/db/connect.js'
import { sql, type Kysely } from '../../src/db/kysely.js'
import { migrateToLatest, migrationsToWaitFor } from '../../src/db/migrate.js'
import { adminQuery, createTestDatabase, databaseUrl } from '../helpers/database.js'

t.test('a search_path that does not reach Baton\'s schema is refused, naming it; one that reaches it is taken', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  await sql`create schema crm`.execute(database.db)
  await adminQuery(`alter database ${database.name} set search_path = crm`)
  const handle = openPostgres(databaseUrl(database.name), { poolMax: 2 })
  t.teardown(() => handle.close())
  const refusals = [
    await migrateToLatest(handle).then(() => undefined, (error: unknown) => error),
    await migrationsToWaitFor(handle.db as Kysely<unknown>).then(() => undefined, (error: unknown) => error)
  ]
  for (const refused of refusals) {
    t.type(refused, ConfigError)
    t.match((refused as Error).message, /^DATABASE_URL: Baton's tables are in the schema "public", which this connection's search_path \(crm\) does not reach, .*ALTER ROLE <user> SET search_path = public/)
  }
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_tables where schemaname = 'crm'`.execute(handle.db)
  t.equal(rows[0]!.n, 0, 'nothing was made in crm')

  await adminQuery(`alter database ${database.name} set search_path = crm, public`)
  const reaching = openPostgres(databaseUrl(database.name), { poolMax: 2 })
  t.teardown(() => reaching.close())
  t.same(await migrateToLatest(reaching), [], 'up to date')
})

// Another Kysely application's schema in the same database holds a kysely_migration table too, which Baton's
// user may not use: not Baton's schema, and a new installation goes into its own.
t.test('another application\'s migration table in a schema Baton\'s user may not use does not stop a new installation', async (t) => {
  const name = `baton_test_${process.pid}_${randomBytes(4).toString('hex')}`
  await adminQuery(`create role ${name} login`)
  t.teardown(() => adminQuery(`drop role if exists ${name}`))
  await adminQuery(`create database ${name} owner ${name}`)
  t.teardown(() => adminQuery(`drop database if exists ${name} with (force)`))
  const admin = new pg.Client({ connectionString: databaseUrl(name) })
  await admin.connect()
  await admin.query('create schema otherapp; create table otherapp.kysely_migration (name varchar(255) primary key, timestamp varchar(255) not null)')
  await admin.end()
  const url = new URL(databaseUrl(name))
  url.username = name
  const handle = openPostgres(url.toString(), { poolMax: 2 })
  t.teardown(() => handle.close())
  t.ok((await migrateToLatest(handle)).length > 0, 'migrated')
  const { rows } = await sql<{ schema: string }>`select distinct schemaname as schema from pg_tables where tablename = 'process_instances'`.execute(handle.db)
  t.same(rows, [{ schema: 'public' }], 'into public')
})
