import { execFileSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { embeddedHandle, LOW_DISK_BYTES, openEmbedded, unopenedCluster, unwritableIn } from '../../src/db/connect.js'
import { extractTar } from '../../src/db/untar.js'
import { runTogether } from '../../src/db/statement.js'
import { lockWithSteps } from '../../src/modules/instances/repository.js'
import { migrationsDigest, templateFiles } from '../../src/db/embedded-template.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { migrationFolder } from '../../src/db/migration-files.js'
import { prepareMigratedTemplate } from '../../src/db/prepare-embedded-template.js'
import { createTestDatabase } from '../helpers/database.js'
import type { DB } from '../../src/db/connect.js'

// What a schema is made of, as the catalog tells it: tables and columns, indexes, constraints, triggers.
async function schemaOf(db: DB): Promise<string[]> {
  const { rows } = await sql<{ line: string }>`
    select 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '') as line
      from information_schema.columns where table_schema = 'public'
    union all select 'index ' || indexdef from pg_indexes where schemaname = 'public'
    union all select 'constraint ' || conrelid::regclass || ' ' || pg_get_constraintdef(oid) from pg_constraint where connamespace = 'public'::regnamespace
    union all select 'trigger ' || tgrelid::regclass || ' ' || tgname from pg_trigger where not tgisinternal
  `.execute(db)
  return rows.map((r) => r.line).sort()
}

t.test('the migrated dump npm install prepares is the schema the migrations make, with every migration recorded', async (t) => {
  const cache = mkdtempSync(join(tmpdir(), 'baton-template-'))
  t.teardown(() => rmSync(cache, { recursive: true, force: true }))
  const real = templateFiles()
  const files = { initdb: join(cache, 'initdb.tar.gz'), migrated: join(cache, 'pglite-x-migrated-0123abcd.tar') }
  if (existsSync(real.initdb)) copyFileSync(real.initdb, files.initdb)
  const stale = join(cache, 'pglite-x-migrated-fedcba98.tar.gz')
  writeFileSync(stale, 'the dump of earlier migrations')

  t.equal(await prepareMigratedTemplate(files), files.migrated)
  t.ok(existsSync(files.migrated), 'the dump is written')
  t.notOk(existsSync(stale), 'the dump of earlier migrations is removed')
  t.ok(existsSync(files.initdb) === existsSync(real.initdb), 'the empty cluster is left as it was')
  const written = statSync(files.migrated).mtimeMs
  await prepareMigratedTemplate(files)
  t.equal(statSync(files.migrated).mtimeMs, written, 'a dump that matches is not made again')

  // A new data folder, as npm start opens it; a cut-off earlier load left a half-written folder beside it.
  const dataDir = join(cache, 'data')
  mkdirSync(join(dataDir, 'pg.loading', 'base'), { recursive: true })
  writeFileSync(join(dataDir, 'pg.loading', 'PG_VERSION'), 'half')
  const handle = await openEmbedded(dataDir, files.migrated)
  t.teardown(() => handle.close())
  t.notOk(existsSync(join(dataDir, 'pg.loading')), 'the cluster is written beside its folder and renamed into place')
  t.same(await migrateToLatest(handle), [], 'a start from the dump finds no migration to run')
  const { rows: [buffers] } = await sql<{ shared_buffers: string }>`show shared_buffers`.execute(handle.db)
  t.equal(buffers?.shared_buffers, '16MB', 'the embedded database keeps 16 MB of shared buffers, not the 128 MB that slow its start')
  const together = [{ text: 'select $1::int as a', values: [1] }, { text: 'select $1::text as b', values: ['two'] }]
  t.same(await handle.db.transaction().execute((trx) => runTogether(trx, together)), [[{ a: 1 }], [{ b: 'two' }]],
    'statements sent together run one at a time, each answering its rows')
  const tenant = '00000000-0000-7000-8000-000000000001'
  t.equal(await handle.db.transaction().execute((trx) => lockWithSteps(trx, tenant, '00000000-0000-7000-8000-000000000002')), undefined,
    'an advance\'s lock and read of the steps run there: no such process')
  const postgres = await createTestDatabase()
  t.teardown(() => postgres.drop())
  const schema = await schemaOf(handle.db)
  t.ok(schema.filter((line) => line.startsWith('index ')).length > 20, 'the tables and their indexes are there')
  t.same(schema, await schemaOf(postgres.db), 'the same schema as a Postgres database migrated from scratch')
})

// PGlite answers a statement without a turn of the event loop, and the next statement queued for its one
// connection went at once: under load no timer ran and no request was read for a second and more (the
// load shedding read an endless event-loop delay and refused a quarter of the requests), and the claims
// of webhook calls waited past their leases.
t.test('the embedded database gives the event loop a turn between statements, so timers and requests do not wait for its whole queue', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'baton-turns-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const template = templateFiles().initdb
  if (!t.ok(existsSync(template), 'npm install prepared the empty cluster')) return
  const handle = await openEmbedded(dataDir, template)
  t.teardown(() => handle.close())
  let statements = 0
  let armedAt: number | undefined
  let ranAt: number | undefined
  // Twenty clients, each with twenty transactions of one statement: all queued for the one connection.
  // Once the queue is well under way, a timer is set.
  await Promise.all(Array.from({ length: 20 }, async () => {
    for (let i = 0; i < 20; i++) {
      await handle.db.transaction().execute(async (trx) => {
        await sql`select 1`.execute(trx)
        statements++
        if (statements === 50) {
          armedAt = statements
          setTimeout(() => { ranAt = statements }, 1)
        }
      })
    }
  }))
  t.equal(armedAt, 50)
  t.ok(ranAt !== undefined && ranAt < statements, `a timer set after 50 statements ran while the others queued (after ${ranAt} of ${statements})`)
})

t.test('the migrated dump is keyed by the migrations: a changed or added one gives another key', async (t) => {
  const folder = mkdtempSync(join(tmpdir(), 'baton-migrations-'))
  t.teardown(() => rmSync(folder, { recursive: true, force: true }))
  writeFileSync(join(folder, '0001_a.ts'), 'export async function up() {}\n')
  writeFileSync(join(folder, 'notes.txt'), 'not a migration')
  const first = migrationsDigest(folder)
  writeFileSync(join(folder, 'notes.txt'), 'still not a migration')
  t.equal(migrationsDigest(folder), first, 'files the migrator does not run do not count')
  writeFileSync(join(folder, '0001_a.ts'), 'export async function up() { /* changed */ }\n')
  const changed = migrationsDigest(folder)
  t.not(changed, first, 'a changed migration')
  writeFileSync(join(folder, '0002_b.ts'), 'export async function up() {}\n')
  t.not(migrationsDigest(folder), changed, 'an added migration')
  t.match(templateFiles().migrated, new RegExp(`-migrated-${migrationsDigest(migrationFolder)}\\.tar$`), 'the file a start looks for carries the key of this tree\'s migrations')
})

t.test('an embedded data folder whose cluster folder holds other files is not overwritten', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'baton-data-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  mkdirSync(join(dataDir, 'pg'))
  writeFileSync(join(dataDir, 'pg', 'notes.txt'), 'mine')
  const template = templateFiles().initdb
  if (!t.ok(existsSync(template), 'npm install prepared the empty cluster')) return
  // A setting to correct, which the start prints alone: a plain error ended it in a fatal log line with its stack trace.
  await t.rejects(openEmbedded(dataDir, template), { name: 'ConfigError', message: /^BATON_DATA_DIR: .*holds files but no database cluster/ })
  t.equal(readFileSync(join(dataDir, 'pg', 'notes.txt'), 'utf8'), 'mine', 'the files are left')
  t.notOk(existsSync(join(dataDir, 'pg.loading')), 'nothing half-written is left beside it')
  t.notOk(existsSync(join(dataDir, 'baton.pid')), 'the folder is unlocked again')
})

// PGlite answers damaged files with a bare "Aborted()", which ended the start in a fatal log line naming
// neither the embedded database nor its folder.
t.test('an embedded database whose files are damaged is named, with BATON_DATA_DIR', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'baton-damaged-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const template = templateFiles().initdb
  if (!t.ok(existsSync(template), 'npm install prepared the empty cluster')) return
  // The cluster a first start writes, without opening it here: a closed PGlite leaves a timer of its own running.
  await extractTar(gunzipSync(readFileSync(template)), join(dataDir, 'pg'))
  truncateSync(join(dataDir, 'pg', 'global', 'pg_control'))
  const exitCode = process.exitCode
  await t.rejects(openEmbedded(dataDir), {
    name: 'ConfigError',
    message: new RegExp(`^BATON_DATA_DIR: the embedded database in ${join(dataDir, 'pg')} could not be opened \\(PGlite: Aborted\\(\\)\\)\\. Its files may be damaged`)
  })
  t.notOk(existsSync(join(dataDir, 'baton.pid')), 'the folder is unlocked again')
  t.equal(process.exitCode, exitCode, 'PGlite\'s abort leaves the exit code of the process alone')
})

// A disk without room for a new WAL segment made PGlite answer as damaged files do, and the start advised
// throwing away a folder whose files were whole (they opened once moved to a disk with room).
t.test('an embedded database that will not open on a nearly full disk is told to free space, not to throw its folder away', async (t) => {
  const aborted = new Error('PGlite failed to initialize properly')
  const full = unopenedCluster('/srv/baton/pg', aborted, 12 * 1024 * 1024)
  t.match(full, { name: 'ConfigError', message: /could not be opened \(PGlite: PGlite failed to initialize properly\)\. Its disk has 12\.0 MB free.*free some space and start again/ })
  t.notMatch(full.message, /move it away|restore/, 'no advice that would lose its data')
  const roomy = unopenedCluster('/srv/baton/pg', aborted, LOW_DISK_BYTES)
  t.match(roomy.message, /Its files may be damaged .*move it away to start with a new, empty one/, 'with room on the disk, the files are what is wrong')
  t.match(unopenedCluster('/srv/baton/pg', aborted, undefined).message, /Its files may be damaged/, 'and when the free space cannot be read')
})

// A cluster this process may not write (a read-only mount, files another user owns) made PGlite answer as
// damaged files do, and the start advised throwing away a folder whose files were whole.
t.test('an embedded database this process may not write is told to give it access, not to throw its folder away', async (t) => {
  const aborted = new Error('PGlite failed to initialize properly')
  const refused = unopenedCluster('/srv/baton/pg', aborted, LOW_DISK_BYTES, { path: '/srv/baton/pg/global/pg_control', code: 'EROFS' })
  t.match(refused, { name: 'ConfigError', message: /could not be opened \(PGlite: PGlite failed to initialize properly\)\. This process may not write \/srv\/baton\/pg\/global\/pg_control \(EROFS\).*give the user Baton runs as access to \/srv\/baton\/pg/ })
  t.notMatch(refused.message, /move it away|restore/, 'no advice that would lose its data')
  t.equal(unwritableIn('/srv/baton/no-such-folder'), undefined, 'a folder that is not there is not taken for one that may not be written')
})

// As root every file may be written: only another user meets the refusal for real.
t.test('a cluster folder another user owns is named at the start, whether it can be read or not', { skip: process.getuid?.() === 0 && 'root may write every file' }, async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'baton-unwritable-'))
  const clusterDir = join(dataDir, 'pg')
  t.teardown(() => {
    chmodSync(clusterDir, 0o700)
    rmSync(dataDir, { recursive: true, force: true })
  })
  const template = templateFiles().initdb
  if (!t.ok(existsSync(template), 'npm install prepared the empty cluster')) return
  await extractTar(gunzipSync(readFileSync(template)), clusterDir)
  for (const mode of [0o500, 0o000]) {
    chmodSync(clusterDir, mode)
    await t.rejects(openEmbedded(dataDir), { name: 'ConfigError', message: new RegExp(`This process may not write ${clusterDir} \\(EACCES\\)`) }, `mode ${mode.toString(8)}`)
    t.notOk(existsSync(join(dataDir, 'baton.pid')), 'the folder is unlocked again')
  }
})

// A folder that cannot be made or written ended the start in a fatal log line naming no setting.
t.test('a BATON_DATA_DIR that cannot hold the embedded database is named as the setting to correct', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'baton-unusable-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'a-file')
  writeFileSync(file, '')
  for (const dataDir of [file, join(file, 'data')]) {
    await t.rejects(openEmbedded(dataDir), { name: 'ConfigError', message: new RegExp(`^BATON_DATA_DIR: the embedded database cannot be kept in ${dataDir}: E(EXIST|NOTDIR)`) }, dataDir)
  }
  // A parent that refuses children with ENOENT: Node's recursive mkdir made the parent again without end.
  if (process.platform === 'linux') {
    const dataDir = '/proc/baton-nowhere/data'
    await t.rejects(openEmbedded(dataDir), { name: 'ConfigError', message: new RegExp(`^BATON_DATA_DIR: the embedded database cannot be kept in ${dataDir}: ENOENT`) }, dataDir)
  }
})

t.test('extractTar writes the folders and files of a tar archive, and refuses paths that leave the destination', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'baton-tar-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const long = 'a-name-longer-than-the-hundred-bytes-a-tar-header-holds-'.repeat(3)
  mkdirSync(join(root, 'src', 'base', '1', 'empty'), { recursive: true })
  writeFileSync(join(root, 'src', 'PG_VERSION'), '17\n')
  writeFileSync(join(root, 'src', 'base', '1', long), Buffer.alloc(10_000, 7))
  writeFileSync(join(root, 'src', 'base', '1', 'zero'), '')
  for (const format of ['gnu', 'ustar']) {
    if (format === 'ustar') rmSync(join(root, 'src', 'base', '1', long)) // ustar holds at most 255 bytes of path
    const archive = execFileSync('tar', ['-c', `--format=${format}`, '-C', join(root, 'src'), '.'])
    const dest = join(root, format)
    t.same(await extractTar(archive, dest), { files: format === 'gnu' ? 3 : 2 }, format)
    t.equal(readFileSync(join(dest, 'PG_VERSION'), 'utf8'), '17\n')
    t.equal(readFileSync(join(dest, 'base', '1', 'zero'), 'utf8'), '')
    t.ok(statSync(join(dest, 'base', '1', 'empty')).isDirectory(), 'an empty folder')
    if (format === 'gnu') t.same(readFileSync(join(dest, 'base', '1', long)), Buffer.alloc(10_000, 7), 'a long name (GNU)')
  }
  writeFileSync(join(root, 'big'), Buffer.alloc(10_000, 1))
  const cut = execFileSync('tar', ['-c', '--format=gnu', '-C', root, 'big']).subarray(0, 4096)
  await t.rejects(extractTar(cut, join(root, 'cut-dest')), /ends inside the entry/, 'an archive cut off')
  t.notOk(existsSync(join(root, 'cut-dest')), 'nothing is written')
  writeFileSync(join(root, 'evil'), 'x')
  const evil = execFileSync('tar', ['-c', '--format=gnu', '-C', root, '-P', '--transform=s,^,../../,', 'evil'])
  await t.rejects(extractTar(evil, join(root, 'evil-dest')), /leaves the destination/)
  t.notOk(existsSync(join(root, 'evil-dest')), 'nothing is written')
  writeFileSync(join(root, 'src', 'base', 'link-target'), 'y')
  execFileSync('ln', ['-s', 'link-target', join(root, 'src', 'base', 'link')])
  const withLink = execFileSync('tar', ['-c', '--format=gnu', '-C', join(root, 'src'), 'base'])
  await t.rejects(extractTar(withLink, join(root, 'link-dest')), /neither a directory nor a regular file/, 'a symbolic link')
  t.notOk(existsSync(join(root, 'link-dest')), 'nothing is written')
})

const { initdb } = templateFiles()
t.test('a new data folder without a migrated dump starts from the gzipped empty cluster and runs the migrations', { skip: !existsSync(initdb) && 'npm install prepared no empty cluster here' }, async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'baton-data-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const handle = await openEmbedded(dataDir, initdb)
  t.teardown(() => handle.close())
  t.ok((await migrateToLatest(handle)).length > 10, 'every migration runs')
})

t.test('closing an embedded database that ran no statement closes PGlite too, so its process can end', async (t) => {
  const { PGlite } = await import('@electric-sql/pglite')
  const pglite = await PGlite.create()
  let released = false
  await embeddedHandle(pglite, () => { released = true }).close()
  t.ok(pglite.closed, 'PGlite is closed')
  t.ok(released, 'and the lock released after it')
})
