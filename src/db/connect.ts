import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import type { Database } from './database.js'

export type DB = Kysely<Database>

export interface DatabaseHandle {
  db: DB
  kind: 'postgres' | 'embedded'
  /** The server's connection string, for LISTEN/NOTIFY clients; absent on the embedded database. */
  url?: string
  close(): Promise<void>
}

export interface DatabaseOptions {
  DATABASE_URL?: string | undefined
  DATABASE_POOL_MAX: number
  BATON_DATA_DIR: string
}

export async function openDatabase(options: DatabaseOptions): Promise<DatabaseHandle> {
  if (options.DATABASE_URL) return openPostgres(options.DATABASE_URL, options.DATABASE_POOL_MAX)
  return openEmbedded(options.BATON_DATA_DIR)
}

export function openPostgres(url: string, poolMax = 10): DatabaseHandle {
  const pool = new pg.Pool({ connectionString: url, max: poolMax })
  // An idle client losing its server must not crash the process; the next query reconnects.
  pool.on('error', () => {})
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
  return { db, kind: 'postgres', url, close: () => db.destroy() }
}

export class DataDirBusyError extends Error {
  override name = 'DataDirBusyError'
}

async function openEmbedded(dataDir: string): Promise<DatabaseHandle> {
  const dir = resolve(dataDir)
  const releaseLock = lockDataDir(dir)
  try {
    const [{ PGlite }, { PGliteDialect }] = await Promise.all([
      import('@electric-sql/pglite'),
      import('kysely-pglite-dialect')
    ])
    const pglite = await PGlite.create(join(dir, 'pg'))
    const db = new Kysely<Database>({ dialect: new PGliteDialect(pglite) })
    return {
      db,
      kind: 'embedded',
      close: async () => {
        await db.destroy()
        releaseLock()
      }
    }
  } catch (error) {
    releaseLock()
    throw error
  }
}

// The embedded database is single-process: a pid file keeps a second process from opening it.
function lockDataDir(dir: string): () => void {
  mkdirSync(dir, { recursive: true })
  const lockFile = join(dir, 'baton.pid')
  const holder = readHolder(lockFile)
  if (holder !== undefined && holder !== process.pid && isAlive(holder)) {
    throw new DataDirBusyError(
      `The embedded database in ${dir} is in use by process ${holder}. ` +
        'It serves one process at a time: stop that process, or set DATABASE_URL to share a Postgres server.'
    )
  }
  writeFileSync(lockFile, String(process.pid))
  return () => rmSync(lockFile, { force: true })
}

function readHolder(lockFile: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(lockFile, 'utf8'), 10)
    return Number.isInteger(pid) ? pid : undefined
  } catch {
    return undefined
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}
