// A database whose encoding is not UTF8, made as an operator's platform makes one (`createdb --encoding=LATIN1`,
// an old cluster's SQL_ASCII): Baton stops before it migrates or serves anything, naming the encoding and how to
// make a UTF8 database (src/db/encoding.ts). Before, the migrations ran and the API answered 400 "contains a
// character that cannot be stored (e.g. NUL, U+0000)" to every name, record field, template or step holding an
// emoji or Chinese text on LATIN1, and on SQL_ASCII kept bytes that Postgres counted and case-folded as Latin letters.
import { randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import { ConfigError } from '../../src/config.js'
import { openPostgres } from '../../src/db/connect.js'
import { checkEncoding } from '../../src/db/encoding.js'
import { sql } from '../../src/db/kysely.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { adminQuery, databaseUrl } from '../helpers/database.js'
import { runScript } from '../helpers/process.js'

/** An empty database of `encoding`, made from template0 with the C locale, which takes every encoding; dropped with the test. */
async function emptyDatabase(t: Test, encoding: string): Promise<string> {
  const name = `baton_test_${process.pid}_${randomBytes(4).toString('hex')}`
  await adminQuery(`create database ${name} template template0 encoding '${encoding}' lc_collate 'C' lc_ctype 'C'`)
  t.teardown(() => adminQuery(`drop database if exists ${name} with (force)`))
  return name
}

for (const encoding of ['LATIN1', 'WIN1252', 'SQL_ASCII']) {
  t.test(`a database encoded in ${encoding} is refused, naming its encoding and how to make one in UTF8`, async (t) => {
    const name = await emptyDatabase(t, encoding)
    const handle = openPostgres(databaseUrl(name), { poolMax: 1 })
    t.teardown(() => handle.close())
    const refused = await checkEncoding(handle.db).then(() => undefined, (error: unknown) => error)
    t.type(refused, ConfigError)
    t.match((refused as Error).message, new RegExp(`^DATABASE_URL: the database "${name}" is encoded in ${encoding}, and Baton stores text as UTF-8: .*ENCODING 'UTF8'`))
  })
}

t.test('a UTF8 database is taken, whatever its locale', async (t) => {
  const name = `baton_test_${process.pid}_${randomBytes(4).toString('hex')}`
  await adminQuery(`create database ${name} template template0 encoding 'UTF8' locale_provider icu icu_locale 'tr' lc_collate 'C' lc_ctype 'C'`)
  t.teardown(() => adminQuery(`drop database if exists ${name} with (force)`))
  const handle = openPostgres(databaseUrl(name), { poolMax: 1 })
  t.teardown(() => handle.close())
  t.equal(await checkEncoding(handle.db), undefined, 'taken, without a warning')
})

t.test('the start and db:migrate stop on a LATIN1 database before they migrate it', async (t) => {
  const name = await emptyDatabase(t, 'LATIN1')
  const env = { DATABASE_URL: databaseUrl(name), PORT: '0', WORKER_HTTP_PORT: '0', BATON_ADMIN_TOKEN: 'a-test-operator-key-of-enough-length' }
  const runs = await Promise.all(([['src/server.ts', ['--role=worker']], ['scripts/migrate.ts', []]] as const).map(async ([script, args]) => {
    const run = runScript(script, env, [...args])
    t.teardown(() => { run.child.kill('SIGKILL') })
    return { script, code: await run.exited, output: run.output() }
  }))
  for (const { script, code, output } of runs) {
    t.equal(code, 1, `${script}: exit 1`)
    t.match(output, /^DATABASE_URL: the database "\w+" is encoded in LATIN1, and Baton stores text as UTF-8/, `${script}: names the encoding`)
    t.notMatch(output, /at .+\.(ts|js):\d+/, `${script}: no stack trace`)
  }
  const handle = openPostgres(databaseUrl(name), { poolMax: 1 })
  t.teardown(() => handle.close())
  const { rows: tables } = await sql`select table_name from information_schema.tables where table_schema = 'public'`.execute(handle.db)
  t.same(tables, [], 'nothing was migrated')
})

// An installation already on such a database (Baton did not check before) goes on: stopped, an upgrade's new
// processes would not serve while the old ones run on it. It is told at each start, and how to move.
t.test('a LATIN1 database Baton already has its tables in is taken, with a warning saying how to move', async (t) => {
  const name = await emptyDatabase(t, 'LATIN1')
  const handle = openPostgres(databaseUrl(name), { poolMax: 1 })
  t.teardown(() => handle.close())
  await migrateToLatest(handle)
  t.match(await checkEncoding(handle.db), /^the database "\w+" is encoded in LATIN1, and Baton stores text as UTF-8: .*ENCODING 'UTF8'.*moved with pg_dump and pg_restore/)
  const run = runScript('scripts/migrate.ts', { DATABASE_URL: databaseUrl(name) })
  t.teardown(() => { run.child.kill('SIGKILL') })
  t.equal(await run.exited, 0, 'db:migrate: exit 0')
  t.match(run.output(), /^warning: the database "\w+" is encoded in LATIN1/m, 'db:migrate: names the encoding')
})
