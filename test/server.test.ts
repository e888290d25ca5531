import { randomBytes } from 'node:crypto'
import { existsSync, readdirSync } from 'node:fs'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { openEmbedded } from '../src/db/connect.js'
import { templateFiles } from '../src/db/embedded-template.js'
import { sql } from '../src/db/kysely.js'
import { migrateToLatest } from '../src/db/migrate.js'
import { isMigrationFile, migrationFolder } from '../src/db/migration-files.js'
import { VERSION } from '../src/version.js'
import { adminQuery, createTestDatabase, databaseUrl } from './helpers/database.js'
import { runCommand, runScript, workerEnv } from './helpers/process.js'

// Tests that each start server processes: ~50 s on an idle machine, past tap's 120 s on a busy one.
t.setTimeout(180_000)

// The newcomer's path: `npm start` (scripts/start.mjs, the sources compiled by esbuild) with no
// DATABASE_URL boots the embedded database in BATON_DATA_DIR.
t.test('the server starts on the embedded database and prints a working operator key', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-smoke-'))
  t.teardown(() => rm(dataDir, { recursive: true, force: true }))
  const env = { BATON_DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'info', DATABASE_URL: '', BATON_ADMIN_TOKEN: '', SHUTDOWN_DELAY_MS: '0' }
  const start = () => runCommand(process.execPath, ['scripts/start.mjs'], env)

  const started = Date.now()
  const server = start()
  t.teardown(() => { server.child.kill('SIGKILL') })
  const [, address] = await server.waitFor(/Baton listening on (http:\/\/[^"\s]+)/, 60_000)
  const [, key] = await server.waitFor(/export BATON_ADMIN_TOKEN=(\S+)/)

  let ready = await fetch(`${address}/health/ready`)
  while (ready.status !== 200 && Date.now() - started < 60_000) ready = await fetch(`${address}/health/ready`)
  t.equal(ready.status, 200, 'ready')
  t.comment(`embedded cold start to ready: ${Date.now() - started} ms`)
  if (existsSync(templateFiles().migrated)) {
    t.notMatch(server.output(), /ran \d+ migrations?/, 'a new data folder starts from the migrated dump npm install prepared, without running a migration')
  }

  const tenants = await fetch(`${address}/v1/tenants`, { headers: { authorization: `Bearer ${key}` } })
  t.equal(tenants.status, 200, 'the printed key is the operator key')
  const docs = await fetch(`${address}/docs`)
  t.equal(docs.status, 200, '/docs is served without a key')
  const spec = await fetch(`${address}/openapi.json`)
  t.match(await spec.json(), { openapi: '3.0.3', info: { version: VERSION } }, 'the version of package.json, which the compiled tree copies')

  const second = start()
  t.equal(await second.exited, 1, 'a second process on the same data dir stops')
  t.match(second.output(), /in use by process \d+/)

  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0, 'SIGTERM exits 0')

  const again = start()
  t.teardown(() => { again.child.kill('SIGKILL') })
  await again.waitFor(/Baton listening on/, 60_000)
  t.notMatch(again.output(), /export BATON_ADMIN_TOKEN=/, 'the key is shown only on the first start')
  again.child.kill('SIGTERM')
  t.equal(await again.exited, 0)
})

// A pull that brings a migration: the compiled tree runs it (the migrator imports the compiled ES modules).
t.test('npm start on an empty Postgres database runs every migration from the compiled tree', async (t) => {
  const name = `baton_empty_${process.pid}_${randomBytes(4).toString('hex')}`
  await adminQuery(`create database ${name}`)
  t.teardown(() => adminQuery(`drop database if exists ${name} with (force)`))
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-empty-'))
  t.teardown(() => rm(dataDir, { recursive: true, force: true }))
  const server = runCommand(process.execPath, ['scripts/start.mjs', '--role=api'], {
    DATABASE_URL: databaseUrl(name), BATON_DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'info', BATON_ADMIN_TOKEN: 'a-test-operator-key-of-enough-length',
    SHUTDOWN_DELAY_MS: '0'
  })
  t.teardown(() => { server.child.kill('SIGKILL') })
  const [, count] = await server.waitFor(/ran (\d+) migrations/, 60_000)
  t.equal(Number(count), readdirSync(migrationFolder).filter(isMigrationFile).length, 'each migration in the folder')
  const [, address] = await server.waitFor(/Baton listening on (http:\/\/[^"\s]+)/, 60_000)
  t.equal((await fetch(`${address}/health/ready`)).status, 200)
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
})

t.test('a wrong setting stops the process with a message naming it', async (t) => {
  const server = runScript('src/server.ts', { PORT: 'eighty', LOG_LEVEL: 'loud' })
  t.equal(await server.exited, 1)
  t.match(server.output(), /PORT: must be an integer/)
  t.match(server.output(), /LOG_LEVEL: must be one of/)
  t.notMatch(server.output(), /at .+\.ts:\d+/, 'no stack trace')
})

// These failed the first start-up step with the server's error in a fatal log line (a stack trace from
// the scripts), naming no setting.
t.test('a DATABASE_URL whose database or user the server does not know stops the process naming it', async (t) => {
  const missing = `baton_missing_${randomBytes(4).toString('hex')}`
  const cases: [string, RegExp][] = [
    [databaseUrl(missing), new RegExp(`^DATABASE_URL: the database server refused it: database "${missing}" does not exist\\n$`)],
    [databaseUrl('postgres').replace(/\/\/[^@/]*@?/, `//${missing}@`), new RegExp(`^DATABASE_URL: the database server refused it: role "${missing}" does not exist\\n$`)]
  ]
  for (const [url, message] of cases) {
    for (const [script, args] of [['src/server.ts', ['--role=api']], ['scripts/migrate.ts', []]] as const) {
      const run = runScript(script, { DATABASE_URL: url, PORT: '0', BATON_ADMIN_TOKEN: 'a-test-operator-key-of-enough-length' }, [...args])
      t.teardown(() => { run.child.kill('SIGKILL') })
      t.equal(await run.exited, 1, `${script}: exit 1`)
      t.match(run.output(), message, script)
    }
  }
})

// A running process waits for such a refusal to end, as for any outage (test/runtime/database-refusals.test.ts);
// a start must not: it stops naming the setting. CONNECT withheld (42501) ended it in a fatal line with a stack trace.
t.test('a DATABASE_URL whose user may not connect to its database stops the process naming it', async (t) => {
  const name = `baton_noconnect_${randomBytes(4).toString('hex')}`
  await adminQuery(`create role ${name} login`)
  await adminQuery(`create database ${name}`)
  await adminQuery(`revoke connect on database ${name} from public`)
  t.teardown(async () => {
    await adminQuery(`drop database if exists ${name} with (force)`)
    await adminQuery(`drop role if exists ${name}`)
  })
  const url = databaseUrl(name).replace(/\/\/[^@/]*@?/, `//${name}@`)
  // Without migrations at its start, the first reading of the database's clock is a worker's first statement:
  // it went on by its machine's clock, warning twice a second that the user was refused.
  const runs = [['src/server.ts', ['--role=worker'], {}], ['src/server.ts', ['--role=worker'], { BATON_MIGRATE_ON_START: 'false' }], ['scripts/migrate.ts', [], {}]] as const
  for (const [script, args, env] of runs) {
    const run = runScript(script, { DATABASE_URL: url, WORKER_HTTP_PORT: '0', BATON_ADMIN_TOKEN: 'a-test-operator-key-of-enough-length', ...env }, [...args])
    t.teardown(() => { run.child.kill('SIGKILL') })
    t.equal(await run.exited, 1, `${script}: exit 1`)
    t.match(run.output(), new RegExp(`^DATABASE_URL: the database server refused it: permission denied for database "${name}"\\n`), script)
  }
})

// A user that may connect but holds none of Baton's privileges (a read-only role, the wrong one of two):
// on a migrated database the start and db:migrate said a pg_restore into it was still running, as the
// record of its migrations could not be read; admin:rotate-key and secrets:reencrypt printed a stack trace.
// On an empty database, the schema Postgres 15 lets no one create in but its owner.
t.test('a DATABASE_URL whose user lacks a privilege on Baton\'s tables or schema stops the process naming it', async (t) => {
  const name = `baton_noprivilege_${randomBytes(4).toString('hex')}`
  const migrated = await createTestDatabase()
  await adminQuery(`create role ${name} login`)
  await adminQuery(`create database ${name}`)
  t.teardown(async () => {
    await migrated.drop()
    await adminQuery(`drop database if exists ${name} with (force)`)
    await adminQuery(`drop role if exists ${name}`)
  })
  const asUser = (database: string) => databaseUrl(database).replace(/\/\/[^@/]*@?/, `//${name}@`)
  const env = { PORT: '0', WORKER_HTTP_PORT: '0', BATON_ADMIN_TOKEN: 'a-test-operator-key-of-enough-length', BATON_SECRETS_KEY: Buffer.alloc(32, 1).toString('base64') }
  const runs = [
    [migrated.name, 'src/server.ts', ['--role=api'], /permission denied for table kysely_migration/],
    [migrated.name, 'scripts/migrate.ts', [], /permission denied for table kysely_migration/],
    [migrated.name, 'scripts/rotate-operator-key.ts', [], /permission denied for table kysely_migration/],
    [migrated.name, 'scripts/reencrypt-secrets.ts', [], /permission denied for table kysely_migration/],
    [name, 'src/server.ts', ['--role=worker'], /permission denied for schema public/],
    [name, 'scripts/migrate.ts', [], /permission denied for schema public/]
  ] as const
  for (const [database, script, args, denied] of runs) {
    const run = runScript(script, { ...env, DATABASE_URL: asUser(database) }, [...args])
    t.teardown(() => { run.child.kill('SIGKILL') })
    t.equal(await run.exited, 1, `${script}: exit 1`)
    t.match(run.output(), /^DATABASE_URL: its user lacks a privilege Baton needs \(/, `${script}: names the setting`)
    t.match(run.output(), denied, `${script}: and the privilege`)
    t.notMatch(run.output(), /pg_restore|at .+\.(ts|js):\d+/, `${script}: no restore under way, no stack trace`)
  }
})

// The migrations another runs (a deploy's job): a start on a database without them went on, and served a
// schema it did not know: every request that met a missing column answered 500, the worker logged its error every 2 s.
t.test('with BATON_MIGRATE_ON_START=false a start waits for its pending migrations, saying which, and serves once they are run', async (t) => {
  const name = `baton_unmigrated_${randomBytes(4).toString('hex')}`
  await adminQuery(`create database ${name}`)
  t.teardown(() => adminQuery(`drop database if exists ${name} with (force)`))
  const token = 'a-test-operator-key-of-enough-length'
  const env = { DATABASE_URL: databaseUrl(name), PORT: '0', WORKER_HTTP_PORT: '0', BATON_ADMIN_TOKEN: token, LOG_LEVEL: 'info', SHUTDOWN_DELAY_MS: '0' }
  const server = runScript('src/server.ts', { ...env, BATON_MIGRATE_ON_START: 'false' })
  t.teardown(() => { server.child.kill('SIGKILL') })
  const [, count, first] = await server.waitFor(/waiting for (\d+) pending migrations \((\S+) to \S+\): BATON_MIGRATE_ON_START is false, so run npm run db:migrate/, 60_000)
  t.equal(Number(count), readdirSync(migrationFolder).filter(isMigrationFile).length, 'every migration named')
  t.equal(first, '0001_initial')
  t.notMatch(server.output(), /Baton listening/, 'not serving meanwhile')
  const migrate = runScript('scripts/migrate.ts', env)
  t.equal(await migrate.exited, 0, 'db:migrate')
  const [, address] = await server.waitFor(/Baton listening on (http:\/\/[^"\s]+)/, 60_000)
  t.equal((await fetch(`${address}/health/ready`)).status, 200, 'ready')
  t.equal((await fetch(`${address}/v1/tenants`, { headers: { authorization: `Bearer ${token}` } })).status, 200, 'serves')
  t.notMatch(server.output(), /does not exist/, 'no statement met a missing table or column')
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
})

// Waits no one could end: the migrations db:migrate refuses to run, and an embedded database no other
// process can open while the start holds it. Each stops the start saying why.
t.test('with BATON_MIGRATE_ON_START=false a start refuses what no db:migrate can bring up to date, instead of waiting for ever', async (t) => {
  const env = { PORT: '0', WORKER_HTTP_PORT: '0', BATON_ADMIN_TOKEN: 'a-test-operator-key-of-enough-length', BATON_MIGRATE_ON_START: 'false' }
  const last = readdirSync(migrationFolder).filter(isMigrationFile).sort().at(-1)!.replace(/\.[^.]+$/, '')

  // Another branch's (or a newer version's) migration recorded, one of this version's not.
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  await sql`delete from kysely_migration where name = ${last}`.execute(database.db)
  await sql`insert into kysely_migration (name, timestamp) values ('9999_other_branch', now())`.execute(database.db)
  const branch = runScript('src/server.ts', { ...env, DATABASE_URL: databaseUrl(database.name) }, ['--role=worker'])
  t.teardown(() => { branch.child.kill('SIGKILL') })
  t.equal(await branch.exited, 1, 'another branch\'s database: exit 1')
  t.match(branch.output(), new RegExp(`does not have \\(9999_other_branch\\).*lacks ${last}`), 'naming both')

  // An embedded database lacking a migration.
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-unmigrated-'))
  t.teardown(() => rm(dataDir, { recursive: true, force: true }))
  const embedded = await openEmbedded(dataDir)
  await migrateToLatest(embedded) // the dump npm install prepared may predate the newest migration: then it is the empty cluster's
  await sql`delete from kysely_migration where name = ${last}`.execute(embedded.db)
  await embedded.close()
  const alone = runScript('src/server.ts', { ...env, DATABASE_URL: '', BATON_DATA_DIR: dataDir })
  t.teardown(() => { alone.child.kill('SIGKILL') })
  t.equal(await alone.exited, 1, 'the embedded database: exit 1')
  t.match(alone.output(), new RegExp(`^BATON_MIGRATE_ON_START=false, and the embedded database lacks 1 migration \\(${last}\\), which no other process can run`, 'm'))
})

t.test('a role given as two arguments, or a wrong one, stops the process instead of running every role', async (t) => {
  // A server that does not answer: a process that went on would wait for it rather than exit.
  const env = { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/baton', PORT: '0', WORKER_HTTP_PORT: '0' }
  for (const args of [['--role', 'worker'], ['--role=wroker'], ['worker']]) {
    const server = runScript('src/server.ts', env, args)
    t.teardown(() => { server.child.kill('SIGKILL') })
    const code = await Promise.race([server.exited, new Promise((resolve) => setTimeout(() => resolve('still running'), 15_000).unref())])
    t.equal(code, 1, args.join(' '))
    t.match(server.output(), /unknown argument|--role must be all, api or worker/, args.join(' '))
  }
})

t.test('--role=api or --role=worker without DATABASE_URL stops the process naming it, before the embedded database opens', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-role-'))
  t.teardown(() => rm(dataDir, { recursive: true, force: true }))
  // The embedded database serves one process: an API alone on it never had a worker to call a provider.
  for (const role of ['api', 'worker']) {
    const server = runScript('src/server.ts', { DATABASE_URL: '', BATON_DATA_DIR: dataDir, PORT: '0', WORKER_HTTP_PORT: '0' }, [`--role=${role}`])
    t.teardown(() => { server.child.kill('SIGKILL') })
    const code = await Promise.race([server.exited, new Promise((resolve) => setTimeout(() => resolve('still running'), 30_000).unref())])
    t.equal(code, 1, `--role=${role} exits 1`)
    t.match(server.output(), new RegExp(`^DATABASE_URL: --role=${role} needs a Postgres server; the embedded database serves one process.*npm start\\n$`), role)
    t.same(readdirSync(dataDir), [], `--role=${role} left the data dir untouched`)
  }
})

// A host that does not resolve fails its listen with ENOTFOUND, which reads as the database being away:
// the process logged "carrying on" and exited 0 without listening.
t.test('a HOST that is not this machine\'s or a port in use stops the process with a message naming it', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-listen-'))
  t.teardown(() => rm(dataDir, { recursive: true, force: true }))
  const taken = createServer()
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => taken.close(() => resolve())))
  const port = String((taken.address() as AddressInfo).port)
  const base = { ...workerEnv(database.name, dataDir, 'listen'), BATON_ADMIN_TOKEN: 'a-test-operator-key-of-enough-length', PORT: '0' }
  // Each role's listen, end to end; which failure names which setting is listenProblem's, in
  // test/config/config.test.ts.
  const cases: [Record<string, string>, string, RegExp][] = [
    [{ HOST: 'baton-host.invalid' }, 'api', /HOST: "baton-host\.invalid" is not an address of this machine/],
    [{ WORKER_HTTP_PORT: port }, 'worker', new RegExp(`WORKER_HTTP_PORT: 127\\.0\\.0\\.1:${port} is in use`)]
  ]
  for (const [env, role, message] of cases) {
    const server = runScript('src/server.ts', { ...base, ...env }, [`--role=${role}`])
    t.teardown(() => { server.child.kill('SIGKILL') })
    t.equal(await server.exited, 1, `${JSON.stringify(env)} --role=${role} exits 1`)
    t.match(server.output(), message)
    t.notMatch(server.output(), /carrying on/)
  }
})

// The key was printed only once the server listened: a first start that ended before (here a port in
// use; a Ctrl-C or a crash alike) kept a key no one saw, and the next start said it used that one.
t.test('a first start that stops before listening has printed the operator key it kept', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-first-key-'))
  t.teardown(() => rm(dataDir, { recursive: true, force: true }))
  const taken = createServer()
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => taken.close(() => resolve())))
  const env = { BATON_DATA_DIR: dataDir, DATABASE_URL: '', BATON_ADMIN_TOKEN: '', LOG_LEVEL: 'info', SHUTDOWN_DELAY_MS: '0' }
  const first = runScript('src/server.ts', { ...env, PORT: String((taken.address() as AddressInfo).port) })
  t.teardown(() => { first.child.kill('SIGKILL') })
  t.equal(await first.exited, 1, 'the port in use stops the first start')
  t.match(first.output(), /PORT: .* is in use/)
  const [, key] = /export BATON_ADMIN_TOKEN=(\S+)/.exec(first.output()) ?? []
  if (!t.ok(key, 'the key it kept is shown')) return

  const again = runScript('src/server.ts', { ...env, PORT: '0' })
  t.teardown(() => { again.child.kill('SIGKILL') })
  const [, address] = await again.waitFor(/Baton listening on (http:\/\/[^"\s]+)/, 60_000)
  t.equal((await fetch(`${address}/v1/tenants`, { headers: { authorization: `Bearer ${key}` } })).status, 200, 'and it is the operator key')
  again.child.kill('SIGTERM')
  t.equal(await again.exited, 0)
})
