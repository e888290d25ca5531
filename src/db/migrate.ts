import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { DEFAULT_MIGRATION_TABLE, Migrator, sql, type Kysely, type Migration, type MigrationProvider, type MigrationResultSet } from './kysely.js'
import type { DatabaseHandle } from './connect.js'
import { isMigrationFile, migrationFolder } from './migration-files.js'

// Any constant shared by every Baton process: it serialises migrations across processes.
const MIGRATION_LOCK_ID = 7_202_611

export async function migrateToLatest(handle: DatabaseHandle): Promise<string[]> {
  // Every start runs this: when all migrations are recorded, one query answers, without the
  // migrator's lock, its own tables' checks and the import of every migration file.
  if (await upToDate(handle.db as Kysely<unknown>)) return []
  const run = (db: Kysely<unknown>) => check(newMigrator(db).migrateToLatest())
  if (handle.kind === 'embedded') return run(handle.db as Kysely<unknown>)
  // A migration may take longer than a request may: its own connection, without the statement timeout.
  // Kysely's own lock table is created racily; a session advisory lock makes a second process wait.
  const session = await handle.session({ timeouts: false })
  try {
    return await session.db.connection().execute(async (conn) => {
      await sql`select pg_advisory_lock(${MIGRATION_LOCK_ID})`.execute(conn)
      try {
        return await run(conn as Kysely<unknown>)
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

/** Whether every migration in the folder is recorded as run (false when that cannot be read, e.g. on an empty database). */
async function upToDate(db: Kysely<unknown>): Promise<boolean> {
  const names = (await fs.readdir(migrationFolder)).filter(isMigrationFile).map((file) => file.slice(0, file.lastIndexOf('.')))
  try {
    const { rows } = await sql<{ name: string }>`select name from ${sql.table(DEFAULT_MIGRATION_TABLE)}`.execute(db)
    const done = new Set(rows.map((r) => r.name))
    return names.every((name) => done.has(name))
  } catch {
    return false
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
