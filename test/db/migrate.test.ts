import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from '../../src/db/kysely.js'
import t from 'tap'
import { openPostgres } from '../../src/db/connect.js'
import pg from 'pg'
import { migrateToLatest, pendingMigrations } from '../../src/db/migrate.js'
import { adminQuery, createTestDatabase, databaseUrl } from '../helpers/database.js'
import { findOperatorKeyHash } from '../../src/modules/auth/repository.js'
import { unanswered } from '../../scripts/admin-command.js'
import { runScript } from '../helpers/process.js'

// Tests that start processes of their own (migrations, servers): ~30 s on an idle machine, past tap's 120 s on a busy one.
t.setTimeout(180_000)

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

t.test('a database with every migration recorded is left alone: no lock is waited for', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  // Another process holds the migration lock (it is migrating): a start that has nothing to apply goes on.
  const other = new pg.Client({ connectionString: databaseUrl(database.name) })
  await other.connect()
  t.teardown(() => other.end())
  await other.query('select pg_advisory_lock(7202611)')
  const answer = await Promise.race([
    migrateToLatest(database),
    new Promise<'blocked'>((resolve) => setTimeout(() => resolve('blocked'), 5000).unref())
  ])
  t.same(answer, [], 'nothing applied, without waiting for the lock')

  // One migration not recorded: the migrator runs, and waits for the lock as before.
  await sql`delete from kysely_migration where name = (select max(name) from kysely_migration)`.execute(database.db)
  const migrating = migrateToLatest(database)
  const early = await Promise.race([migrating.then(() => 'done', () => 'failed'), new Promise((resolve) => setTimeout(() => resolve('waiting'), 500))])
  t.equal(early, 'waiting', 'a pending migration waits for the lock')
  await other.query('select pg_advisory_unlock(7202611)')
  await migrating.catch(() => {})
})

// SPEC §5: a command that would open the embedded database from a second process stops with a clear
// message. These two printed the error's stack; a wrong setting did too.
t.test('db:migrate, admin:rotate-key and secrets:reencrypt stop with the message alone on a data dir in use or a wrong setting', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-busy-'))
  t.teardown(() => rm(dataDir, { recursive: true, force: true }))
  // This test's process holds the data dir, as a running `npm start` does.
  writeFileSync(join(dataDir, 'baton.pid'), String(process.pid))
  // secrets:reencrypt asks for its key before it opens the database.
  const key = { BATON_SECRETS_KEY: randomBytes(32).toString('base64') }
  for (const script of ['scripts/migrate.ts', 'scripts/rotate-operator-key.ts', 'scripts/reencrypt-secrets.ts']) {
    const busy = runScript(script, { DATABASE_URL: '', BATON_DATA_DIR: dataDir, ...key })
    t.equal(await busy.exited, 1, `${script} on a data dir in use`)
    t.match(busy.output(), new RegExp(`^The embedded database in ${dataDir} is in use by process ${process.pid}\\.`), script)
    t.notMatch(busy.output(), /\n\s+at |DataDirBusyError/, `${script}: no stack trace`)
    const wrong = runScript(script, { DATABASE_URL: 'mysql://db', BATON_DATA_DIR: dataDir })
    t.equal(await wrong.exited, 1, `${script} with a wrong setting`)
    t.match(wrong.output(), /^Invalid configuration:\n {2}- DATABASE_URL: must be a postgres:\/\/ \(or postgresql:\/\/\) URL/, script)
    t.notMatch(wrong.output(), /\n\s+at |ConfigError/, `${script}: no stack trace`)
  }
})

// A server that is down, or a DATABASE_URL naming the wrong port: each printed node-postgres's stack trace.
t.test('db:migrate, admin:rotate-key and secrets:reencrypt stop with a message when the database does not answer', async (t) => {
  const closed = createServer()
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
  const { port } = closed.address() as AddressInfo
  await new Promise((resolve) => closed.close(resolve))
  const env = { DATABASE_URL: `postgres://baton:a-password-of-its-own@127.0.0.1:${port}/baton`, BATON_ADMIN_TOKEN: '', BATON_SECRETS_KEY: randomBytes(32).toString('base64') }
  for (const script of ['scripts/migrate.ts', 'scripts/rotate-operator-key.ts', 'scripts/reencrypt-secrets.ts']) {
    const run = runScript(script, env)
    t.equal(await run.exited, 1, script)
    t.equal(run.output(), `The database did not answer (connect ECONNREFUSED 127.0.0.1:${port}): check that the database server runs and that DATABASE_URL names it, `
      + 'then run this command again.\n', `${script}: the message alone, no stack trace`)
  }
})

// On a database before its first migration they printed Postgres's `relation "…" does not exist` with a stack trace.
t.test('admin:rotate-key and secrets:reencrypt on a database not migrated yet stop with a message, having changed nothing', async (t) => {
  const name = `baton_unmigrated_${randomBytes(4).toString('hex')}`
  await adminQuery(`create database ${name}`)
  t.teardown(() => adminQuery(`drop database if exists ${name} with (force)`))
  const env = { DATABASE_URL: databaseUrl(name), BATON_ADMIN_TOKEN: '', BATON_SECRETS_KEY: randomBytes(32).toString('base64') }
  for (const script of ['scripts/rotate-operator-key.ts', 'scripts/reencrypt-secrets.ts']) {
    const run = runScript(script, env)
    t.equal(await run.exited, 1, script)
    t.match(run.output(), /^The database lacks \d+ migrations of this version of Baton \(0001_initial, …\): run `npm run db:migrate` \(or start Baton, which migrates\), then this command again\.\n$/, script)
  }
  const database = openPostgres(databaseUrl(name), { poolMax: 1 })
  t.teardown(() => database.close())
  t.equal((await sql<{ n: number }>`select count(*)::int as n from pg_tables where schemaname = 'public'`.execute(database.db)).rows[0]!.n, 0, 'no table was made')
})

// They take no arguments and read none: `npm run admin:rotate-key -- --help` replaced the operator key,
// and `npm run db:migrate -- --down` migrated up and said the database was up to date.
t.test('db:migrate, admin:rotate-key and secrets:reencrypt given an argument stop with a message, having done nothing', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  await sql`delete from kysely_migration where name = (select max(name) from kysely_migration)`.execute(database.db)
  const env = { DATABASE_URL: databaseUrl(database.name), BATON_ADMIN_TOKEN: '', BATON_SECRETS_KEY: randomBytes(32).toString('base64') }
  for (const script of ['scripts/migrate.ts', 'scripts/rotate-operator-key.ts', 'scripts/reencrypt-secrets.ts']) {
    for (const argument of ['--help', '--down']) {
      const run = runScript(script, env, [argument])
      t.equal(await run.exited, 1, `${script} ${argument}`)
      t.equal(run.output(), `unknown argument "${argument}": this command takes no arguments; it reads its settings from the environment, as Baton does\n`, `${script} ${argument}`)
    }
  }
  t.equal(await findOperatorKeyHash(database.db), undefined, 'no operator key was made')
  t.equal((await pendingMigrations(database.db as never)).length, 1, 'no migration was run')
})

// Kysely refused a database a newer Baton migrated, once this version had a migration to run there, with
// "corrupted migrations: previously executed migration … is missing" and a stack trace (in a fatal log
// line from the server); with none to run, db:migrate said "up to date" and no more.
t.test('a database a newer Baton migrated: db:migrate says it is ahead; with one of ours missing too, it and the server stop naming both', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  await sql`insert into kysely_migration (name, timestamp) values ('9999_from_a_newer_baton', now())`.execute(database.db)
  const env = { DATABASE_URL: databaseUrl(database.name), BATON_ADMIN_TOKEN: 'a-test-operator-key-of-enough-length', PORT: '0', LOG_LEVEL: 'warn' }
  const ahead = runScript('scripts/migrate.ts', env)
  t.equal(await ahead.exited, 0, ahead.output())
  t.equal(ahead.output(), 'the database is up to date, and ahead: it holds migrations this version of Baton does not have (9999_from_a_newer_baton), run by a newer version\n')
  // A newer version rolled back: this one starts on its schema, and says so (it started without a word).
  const worker = runScript('src/server.ts', { ...env, WORKER_HTTP_PORT: '0' }, ['--role=worker'])
  t.teardown(() => { worker.child.kill('SIGKILL') })
  const [line] = await worker.waitFor(/.*"msg":"the database holds migrations this version of Baton does not have \(9999_from_a_newer_baton\).*/, 60_000)
  t.match(JSON.parse(line), { level: 40, migrations: ['9999_from_a_newer_baton'] }, 'a warning names the newer migrations')
  worker.child.kill('SIGKILL')

  const { rows } = await sql<{ name: string }>`delete from kysely_migration where name = (select max(name) from kysely_migration where name < '9999') returning name`.execute(database.db)
  const ours = rows[0]!.name
  const message = new RegExp(`^The database holds migrations this version of Baton does not have \\(9999_from_a_newer_baton\\), so a newer version migrated it, and lacks ${ours} of this version: run the version that migrated it, or restore the database from before that version ran\\.\\n$`)
  for (const [script, args] of [['scripts/migrate.ts', []], ['src/server.ts', ['--role=api']]] as const) {
    const run = runScript(script, env, [...args])
    t.teardown(() => { run.child.kill('SIGKILL') })
    t.equal(await run.exited, 1, script)
    t.match(run.output(), message, script)
  }
  t.same(await pendingMigrations(database.db as never), [ours], 'nothing was migrated')
})

// A start while pg_restore fills the database: its tables are made first, their rows (the migrations'
// record among them) copied afterwards. The start ran 0001 into "relation operator_keys already exists"
// with a stack trace, and its migrator's lock row broke the restore's primary key on kysely_migration_lock.
t.test('a database pg_restore is still filling: db:migrate and a start stop with a message, writing nothing', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const env = { DATABASE_URL: databaseUrl(database.name), BATON_ADMIN_TOKEN: 'a-test-operator-key-of-enough-length', PORT: '0', LOG_LEVEL: 'warn' }
  const message = /^The database holds Baton's tables \(activities, addresses, api_keys, …\) but no record of the migrations that made them: a pg_restore into it is still running, or stopped part way\. Let the restore finish before starting Baton, or restore again into a new, empty database\.\n$/
  // The restore's schema is in, its rows not yet; then, earlier still, the migrator's own tables not made either.
  await sql`delete from kysely_migration`.execute(database.db)
  await sql`delete from kysely_migration_lock`.execute(database.db)
  for (const stage of ['rows not copied yet', 'migration tables not made yet']) {
    for (const [script, args] of [['scripts/migrate.ts', []], ['src/server.ts', ['--role=api']]] as const) {
      const run = runScript(script, env, [...args])
      t.teardown(() => { run.child.kill('SIGKILL') })
      t.equal(await run.exited, 1, `${stage}: ${script}`)
      t.match(run.output(), message, `${stage}: ${script}`)
    }
    if (stage === 'rows not copied yet') {
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from kysely_migration_lock`.execute(database.db)
      t.equal(rows[0]!.n, 0, 'no lock row of the migrator\'s for the restore\'s own to collide with')
      await sql`drop table kysely_migration, kysely_migration_lock`.execute(database.db)
    }
  }
  const { rows } = await sql<{ name: string | null }>`select to_regclass('kysely_migration_lock')::text as name`.execute(database.db)
  t.equal(rows[0]!.name, null, 'the migrator made none of its tables')
})

// A role or database setting of the server's (a DBA's statement_timeout as a safety net) reached the
// migrations' connection, which sets none of its own: a migration longer than it was cancelled, and the
// start waited for the database, migrating and cancelled again, for ever.
t.test('migrations run whatever statement timeout the database or role sets: their connection lifts it', async (t) => {
  const name = `baton_migrate_${randomBytes(4).toString('hex')}`
  await adminQuery(`create database ${name}`)
  t.teardown(() => adminQuery(`drop database if exists ${name} with (force)`))
  await adminQuery(`alter database ${name} set statement_timeout = '1ms'`)
  await adminQuery(`alter database ${name} set idle_in_transaction_session_timeout = '1ms'`)
  const handle = openPostgres(databaseUrl(name), { poolMax: 1 })
  t.teardown(() => handle.close())
  const ran = await migrateToLatest(handle)
  t.ok(ran.length > 0, `${ran.length} migrations ran`)
  t.same(await pendingMigrations(handle.db as never), [])
})

t.test('a database that does not answer on any of its host\'s addresses, or in time, is told as what to do', async (t) => {
  // localhost as ::1 and 127.0.0.1: node's AggregateError has no message of its own, and the line read "(AggregateError)".
  const refused = (address: string) => Object.assign(new Error(`connect ECONNREFUSED ${address}`), { code: 'ECONNREFUSED' })
  const both = Object.assign(new AggregateError([refused('::1:5999'), refused('127.0.0.1:5999')], ''), { code: 'ECONNREFUSED' })
  t.equal((unanswered(both) as Error).message, 'The database did not answer (connect ECONNREFUSED ::1:5999; connect ECONNREFUSED 127.0.0.1:5999): '
    + 'check that the database server runs and that DATABASE_URL names it, then run this command again.')
  // A statement timeout comes again at once: the command needs more time, not another try.
  const slow = Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' })
  t.match((unanswered(slow) as Error).message, /did not answer in time \(canceling statement due to statement timeout\): run it again with more time, e\.g\. DATABASE_STATEMENT_TIMEOUT_MS=600000\.$/)
})
