import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { DEFAULT_MIGRATION_TABLE, Migrator, sql, type Kysely, type Migration, type MigrationProvider, type MigrationResultSet } from './kysely.js'
import { ConfigError } from '../config.js'
import type { DatabaseHandle } from './connect.js'
import { movedSessionProblem, sessionMoves } from './own-session.js'
import { isDeadlock } from './errors.js'
import { isMigrationFile, migrationFolder } from './migration-files.js'

// Any constant shared by every Baton process: it serialises migrations across processes.
const MIGRATION_LOCK_ID = 7_202_611

// The pending migrations run in one transaction, taking their tables' locks one after another while an
// older version's processes go on: a transaction of theirs that holds one of those tables and waits for
// one the migrations hold already makes a deadlock, whose victim Postgres may choose to be the
// migrations. They are rolled back whole, and run again; the start and db:migrate failed at the first.
const MIGRATION_DEADLOCK_TRIES = 5

export async function migrateToLatest(handle: DatabaseHandle): Promise<string[]> {
  // Every start runs this: when all migrations are recorded, one query answers, without the
  // migrator's lock, its own tables' checks and the import of every migration file.
  if (await upToDate(handle.db as Kysely<unknown>)) return []
  const run = async (db: Kysely<unknown>) => {
    await refuseSchemaOutOfReach(db)
    await refuseUnrecordedSchema(db)
    await refuseUnknownMigrations(db)
    return check(newMigrator(db).migrateToLatest())
  }
  if (handle.kind === 'embedded') return run(handle.db as Kysely<unknown>)
  // A migration may take longer than a request may: its own connection, without the statement timeout.
  // Kysely's own lock table is created racily; a session advisory lock makes a second process wait.
  const session = await handle.session({ timeouts: false })
  try {
    // Through a pooler in transaction mode the lock stayed behind on a server connection other clients use, and its release ran on another.
    const moved = await sessionMoves(handle, session)
    if (moved) {
      throw new ConfigError(`DATABASE_URL: the migrations need a database session of their own, and ${movedSessionProblem(moved)}: ` +
        'their lock, a session advisory lock, would stay behind on a server connection other clients use. Run them (npm run db:migrate) ' +
        'with a DATABASE_URL that reaches Postgres directly or through a pooler in session mode, and start Baton through this one with BATON_MIGRATE_ON_START=false')
    }
    return await session.db.connection().execute(async (conn) => {
      await sql`select pg_advisory_lock(${MIGRATION_LOCK_ID})`.execute(conn)
      try {
        for (let tries = 1; ; tries++) {
          try {
            return await run(conn as Kysely<unknown>)
          } catch (error) {
            if (!isDeadlock(error) || tries >= MIGRATION_DEADLOCK_TRIES) throw error
          }
        }
      } finally {
        await sql`select pg_advisory_unlock(${MIGRATION_LOCK_ID})`.execute(conn)
      }
    })
  } finally {
    await session.close()
  }
}

export async function pendingMigrations(db: Kysely<unknown>): Promise<string[]> {
  const migrations = await newMigrator(db).getMigrations()
  return migrations.filter((m) => m.executedAt === undefined).map((m) => m.name)
}

/**
 * A database holding migrations this version has no file for, while it lacks one of this version's:
 * a newer Baton migrated it (or another branch). Migrating it on would give a schema that matches neither.
 */
export class UnknownMigrationsError extends Error {
  override name = 'UnknownMigrationsError'
}

/**
 * A database holding Baton's tables without a record of the migrations that made them: a `pg_restore`
 * into it still running (the tables are made before their rows are copied) or stopped part way.
 */
export class UnrecordedSchemaError extends Error {
  override name = 'UnrecordedSchemaError'
}

/** The tables the first migration makes: a database with none of its migrations recorded cannot hold one. */
const FIRST_TABLES = ['operator_keys', 'tenants', 'api_keys', 'users', 'properties', 'addresses', 'marketplace_services',
  'service_parameters', 'service_triggers', 'service_activations', 'process_templates', 'template_steps',
  'process_instances', 'instance_steps', 'deliveries', 'delivery_attempts', 'activities', 'outbox_mails']

// A start on a database pg_restore was still filling ran 0001, which stopped at "relation operator_keys
// already exists" with a stack trace, after the migrator had written its lock row: the restore's own row
// then broke its primary key, and pg_restore ended in an error.
async function refuseUnrecordedSchema(db: Kysely<unknown>): Promise<void> {
  const done = await recordedMigrations(db)
  if (done !== undefined && done.size > 0) return
  const { rows } = await sql<{ name: string }>`
    select name from unnest(${FIRST_TABLES}::text[]) as t(name) where to_regclass(quote_ident(name)) is not null order by name
  `.execute(db)
  if (rows.length === 0) return
  throw new UnrecordedSchemaError(`The database holds Baton's tables (${rows.slice(0, 3).map((r) => r.name).join(', ')}${rows.length > 3 ? ', …' : ''}) `
    + 'but no record of the migrations that made them: a pg_restore into it is still running, or stopped part way. '
    + 'Let the restore finish before starting Baton, or restore again into a new, empty database.')
}

/** A table of Baton's own, by which a schema holding a kysely_migration table is told to be Baton's. */
const BATON_TABLE = 'process_instances'

/**
 * A connection whose `search_path` (the role's or the database's, `ALTER … SET search_path = crm`) does not
 * reach the schema Baton's tables are in: the migrations found no record of theirs and began again, and
 * stopped at Kysely's 'relation "kysely_migration_lock" does not exist' (its check for its own tables
 * looks in every schema), as a start that does not migrate did: words that name neither the setting nor
 * the schema. Said, with the schema to reach.
 */
async function refuseSchemaOutOfReach(db: Kysely<unknown>): Promise<void> {
  // Kysely's table alone is any Kysely application's (another app's schema in the same database): a schema
  // counts as Baton's when it holds Baton's tables too, and this user may use it.
  if (await recordedMigrations(db) !== undefined) return
  const { rows } = await sql<{ schema: string; path: string }>`
    select n.nspname as schema, current_setting('search_path') as path from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relname = ${DEFAULT_MIGRATION_TABLE} and c.relkind in ('r', 'p') and not n.nspname = any(current_schemas(true))
      and has_schema_privilege(n.oid, 'USAGE')
      and exists (select 1 from pg_class b where b.relnamespace = n.oid and b.relname = ${BATON_TABLE} and b.relkind in ('r', 'p'))
    order by n.nspname
  `.execute(db)
  if (rows.length === 0) return
  const schemas = rows.map((r) => `"${r.schema}"`).join(', ')
  throw new ConfigError(`DATABASE_URL: Baton's tables are in the schema ${schemas}, which this connection's search_path (${rows[0]!.path}) does not reach, `
    + `so Baton would make a second, empty set of them. Set a search_path that reaches it (ALTER ROLE <user> SET search_path = ${rows[0]!.schema}, `
    + `or -c search_path=${rows[0]!.schema} in the connection string's options); a second installation of Baton needs a database of its own.`)
}

/**
 * This version's migrations not run yet, for a start that may not run them (BATON_MIGRATE_ON_START=false)
 * and waits for them: none once all are recorded. A database no `db:migrate` can bring up to date is
 * refused as migrateToLatest refuses it, where the wait would have no end and its advice would be
 * wrong: one a newer version or another branch migrated, and one a pg_restore is still filling.
 */
export async function migrationsToWaitFor(db: Kysely<unknown>): Promise<string[]> {
  if (await upToDate(db)) return []
  await refuseSchemaOutOfReach(db)
  await refuseUnrecordedSchema(db)
  await refuseUnknownMigrations(db)
  return pendingMigrations(db)
}

/** The migrations recorded as run that this version has no file for: a newer Baton ran them ([] before any ran). */
export async function unknownMigrations(db: Kysely<unknown>): Promise<string[]> {
  const [names, done] = await Promise.all([migrationNames(), recordedMigrations(db)])
  return unknownOf(names, done)
}

function unknownOf(names: string[], done: Set<string> | undefined): string[] {
  return [...(done ?? [])].filter((name) => !names.includes(name)).sort()
}

/** Whether every migration in the folder is recorded as run (false when that cannot be read, e.g. on an empty database). */
async function upToDate(db: Kysely<unknown>): Promise<boolean> {
  const [names, done] = await Promise.all([migrationNames(), recordedMigrations(db)])
  return done !== undefined && names.every((name) => done.has(name))
}

// Kysely refused such a database with "corrupted migrations: previously executed migration 0030_x is
// missing" and a stack trace, which read as a migration lost from the database.
async function refuseUnknownMigrations(db: Kysely<unknown>): Promise<void> {
  const [names, done] = await Promise.all([migrationNames(), recordedMigrations(db)])
  const unknown = unknownOf(names, done)
  if (unknown.length === 0) return
  const pending = names.filter((name) => !done?.has(name))
  throw new UnknownMigrationsError(`The database holds migrations this version of Baton does not have (${unknown.join(', ')}), `
    + `so a newer version migrated it, and lacks ${pending.join(', ')} of this version: run the version that migrated it, `
    + 'or restore the database from before that version ran.')
}

async function migrationNames(): Promise<string[]> {
  return (await fs.readdir(migrationFolder)).filter(isMigrationFile).map((file) => file.slice(0, file.lastIndexOf('.')))
}

/**
 * The names recorded as run; undefined when there is no such table (an empty database). A table the user
 * may not read is no empty database: read as one, it was told as a pg_restore still under way.
 */
async function recordedMigrations(db: Kysely<unknown>): Promise<Set<string> | undefined> {
  try {
    const { rows } = await sql<{ name: string }>`select name from ${sql.table(DEFAULT_MIGRATION_TABLE)}`.execute(db)
    return new Set(rows.map((r) => r.name))
  } catch (error) {
    if ((error as { code?: unknown }).code === '42P01') return undefined
    throw error
  }
}

function newMigrator(db: Kysely<unknown>): Migrator {
  return new Migrator({ db, provider: migrationFiles })
}

/**
 * The migrations' files, imported as ES modules. Kysely's FileMigrationProvider, loaded as CommonJS
 * (kysely.ts), would `require()` them: that loads an ES module only through Node's require of ES
 * modules, which skips the module hooks a TypeScript loader registers (the tests' ts-loader.mjs).
 */
const migrationFiles: MigrationProvider = {
  async getMigrations() {
    const files = (await fs.readdir(migrationFolder)).filter(isMigrationFile)
    const migrations: Record<string, Migration> = {}
    for (const file of files) {
      const module = (await import(pathToFileURL(join(migrationFolder, file)).href)) as Partial<Migration> & { default?: Migration }
      const migration = typeof module.default?.up === 'function' ? module.default : module
      if (typeof migration.up !== 'function') throw new Error(`migration ${file} exports no up()`)
      migrations[file.slice(0, file.lastIndexOf('.'))] = migration as Migration
    }
    return migrations
  }
}

async function check(pending: Promise<MigrationResultSet>): Promise<string[]> {
  const { error, results = [] } = await pending
  if (error) throw error instanceof Error ? error : new Error(String(error))
  return results.filter((r) => r.status === 'Success').map((r) => r.migrationName)
}
