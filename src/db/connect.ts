import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import type { Database } from './database.js'
import { readEmbeddedTemplate } from './embedded-template.js'

export type DB = Kysely<Database>

export interface DatabaseHandle {
  db: DB
  kind: 'postgres' | 'embedded'
  /** Calls `onNotify` with the payload of each NOTIFY on the channel until the returned function is called. */
  listen(channel: string, onNotify: (payload?: string) => void): Promise<() => Promise<void>>
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
  return { db, kind: 'postgres', listen: (channel, onNotify) => listenOnServer(url, channel, onNotify), close: () => db.destroy() }
}

// A dedicated connection for LISTEN; it reconnects after a lost connection and then fires once,
// since notifications sent meanwhile are lost.
async function listenOnServer(url: string, channel: string, onNotify: (payload?: string) => void): Promise<() => Promise<void>> {
  let client: pg.Client | undefined
  let stopped = false
  let retry: NodeJS.Timeout | undefined
  const connect = async (): Promise<void> => {
    const next = new pg.Client({ connectionString: url })
    next.on('notification', (message) => onNotify(message.payload))
    next.on('error', () => reconnect())
    next.on('end', () => reconnect())
    await next.connect()
    await next.query(`listen "${channel.replace(/"/g, '""')}"`)
    client = next
  }
  const reconnect = () => {
    if (stopped || retry) return
    client = undefined
    retry = setTimeout(() => {
      retry = undefined
      connect().then(() => onNotify(), reconnect)
    }, 1000)
  }
  await connect()
  return async () => {
    stopped = true
    clearTimeout(retry)
    await client?.end().catch(() => {})
  }
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
    const clusterDir = join(dir, 'pg')
    const template = existsSync(join(clusterDir, 'PG_VERSION')) ? undefined : readEmbeddedTemplate()
    const pglite = await PGlite.create(clusterDir, template ? { loadDataDir: template } : {})
    const db = new Kysely<Database>({ dialect: new PGliteDialect(pglite) })
    return {
      db,
      kind: 'embedded',
      listen: async (channel, onNotify) => {
        const unlisten = await pglite.listen(channel, (payload) => onNotify(payload))
        return () => unlisten()
      },
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
