import t from 'tap'
import pg from 'pg'
import { sql, type Kysely } from '../../src/db/kysely.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { openPostgres } from '../../src/db/connect.js'
import { createTestDatabase, databaseUrl } from '../helpers/database.js'

// Migrations that run while an older version's processes go on using the database (README, "Migrations
// run at start"): a rolling deploy, or `npm run db:migrate` before the processes are replaced.

/** The database as a version without the migrations from `first` on left it. */
async function migratedBefore(db: Kysely<unknown>, first: string, names: string[]): Promise<void> {
  await db.transaction().execute(async (trx) => {
    for (const name of [...names].reverse()) {
      const migration = (await import(`../../migrations/${name}.ts`)) as { down(db: Kysely<unknown>): Promise<void> }
      await migration.down(trx)
    }
    await sql`delete from kysely_migration where name >= ${first}`.execute(trx)
  })
}

async function client(name: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: databaseUrl(name) })
  await c.connect()
  return c
}

/** Resolves once pg_locks holds a lock on `table` that matches `where`. */
async function untilLock(admin: pg.Client, where: string, values: unknown[], table = 'process_instances'): Promise<void> {
  for (;;) {
    const { rows } = await admin.query(`select 1 from pg_locks where relation = $${values.length + 1}::regclass and ${where}`, [...values, table])
    if (rows.length > 0) return
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

const REPLACING = ['0034_list_indexes_in_id_order', '0035_processes_by_status', '0036_processes_by_parent',
  '0037_deliveries_ended_badly', '0038_attempts_by_outcome', '0039_attempts_by_round', '0040_mails_pending_and_leased',
  '0041_emails_unique_in_any_collation']

// Seen in a rolling deploy under load: 0034 built the new index under the share lock, then its drop
// of the old one waited for a worker's transaction that had locked a process's row and was waiting
// behind the build to update it. Postgres ended the migration as the deadlock's victim; db:migrate failed.
t.test('a migration replacing an index is not ended as a deadlock by a transaction that locked a row of its table', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  await migratedBefore(database.db as Kysely<unknown>, REPLACING[0]!, REPLACING)

  const [admin, writer, process] = await Promise.all([client(database.name), client(database.name), client(database.name)])
  t.teardown(() => Promise.all([admin.end(), writer.end(), process.end()]))
  // Another process is writing the table, so the migration's first lock on it waits.
  await writer.query('begin')
  await writer.query('lock table process_instances in row exclusive mode')
  // A process's transaction locks rows of the table (as recording a webhook's outcome locks its processes first).
  await process.query('begin')
  await process.query('lock table process_instances in row share mode')
  const migrating = migrateToLatest(database).then((names) => names, (error: unknown) => error)
  await untilLock(admin, 'not granted', [])
  // The process's transaction now writes the rows it locked, and the other writer ends.
  const pid = (await process.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid
  const write = process.query('lock table process_instances in row exclusive mode')
  await untilLock(admin, 'pid = $1 and mode = \'RowExclusiveLock\'', [pid])
  await writer.query('commit')
  await write
  await process.query('commit')

  t.same(await migrating, REPLACING, 'the migrations ran')
})

// 0034 holds process_instances (its first index) when it asks for properties: a transaction that holds
// properties (a record's write) and then waits for process_instances (the process it starts) closes a
// cycle, and Postgres ended the migrations, which waited first, as its victim: db:migrate failed.
t.test('migrations ended as the victim of a deadlock with another transaction are run again', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  await migratedBefore(database.db as Kysely<unknown>, REPLACING[0]!, REPLACING)
  const [admin, writer] = await Promise.all([client(database.name), client(database.name)])
  t.teardown(() => Promise.all([admin.end(), writer.end()]))
  // The migrations look for the cycle soon; the writer, never: the migrations are the victim every time.
  await admin.query(`alter database ${database.name} set deadlock_timeout = '50ms'`)
  await writer.query('set deadlock_timeout = \'1min\'')
  const handle = openPostgres(databaseUrl(database.name), { poolMax: 2 })
  t.teardown(() => handle.close())

  await writer.query('begin')
  await writer.query('lock table properties in row exclusive mode')
  const migrating = migrateToLatest(handle).then((names) => names, (error: unknown) => error)
  await untilLock(admin, 'not granted', [], 'properties')
  // Held by the migrations now: the writer waits until Postgres ends them.
  await writer.query('lock table process_instances in row exclusive mode')
  await writer.query('commit')

  t.same(await migrating, REPLACING, 'the migrations ran')
})
