import { accessSync, constants, existsSync, readdirSync, renameSync, rmSync, statfsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { gunzip } from 'node:zlib'
import type { PGlite, QueryOptions } from '@electric-sql/pglite'
import { ConfigError } from '../config.js'
import { Kysely, sql } from './kysely.js'
import type { Database } from './database.js'
import { embeddedTemplateFile } from './embedded-template.js'
import { extractTar } from './untar.js'
import { lockDataDir } from './data-dir-lock.js'
import { createPool, DEFAULT_POSTGRES_OPTIONS, kyselyOn, listenOnServer, TOGETHER, type PostgresOptions, type StatementText } from './postgres.js'
import { coalescedWakeups, TRIGGERS_NOTIFY, WORK_CHANNEL, type Wakeups } from './wakeups.js'

export type DB = Kysely<Database>
export { DataDirBusyError } from './data-dir-lock.js'

/** One connection kept for a caller alone, e.g. for session-level advisory locks. */
export interface Session {
  db: DB
  /** Calls `listener` whenever the connection is lost (and with it the session's locks). */
  onLost(listener: () => void): void
  close(): Promise<void>
}

export interface DatabaseHandle {
  db: DB
  kind: 'postgres' | 'embedded'
  /** Calls `onNotify` with the payload of each NOTIFY on the channel until the returned function is called. */
  listen(channel: string, onNotify: (payload?: string) => void): Promise<() => Promise<void>>
  /** Announces committed work to the schedulers: coalesced NOTIFYs with `quietTriggers`, else nothing (the triggers notify). */
  wakeups: Wakeups
  /**
   * A connection of its own (the embedded database has one connection, which it shares). `timeouts:
   * false` lifts the statement timeout, for migrations.
   */
  session(options: { timeouts: boolean }): Promise<Session>
  close(): Promise<void>
}

export interface DatabaseOptions {
  DATABASE_URL?: string | undefined
  DATABASE_POOL_MAX: number
  DATABASE_STATEMENT_TIMEOUT_MS: number
  DATABASE_CONNECT_TIMEOUT_MS: number
  DATABASE_PREPARED_STATEMENTS: boolean
  BATON_DATA_DIR: string
  /** Postgres only: the work triggers stay silent and `wakeups` notifies instead (a process that only serves the API). */
  quietTriggers?: boolean
}

export async function openDatabase(options: DatabaseOptions, onError?: (error: Error) => void): Promise<DatabaseHandle> {
  if (options.DATABASE_URL) {
    return openPostgres(options.DATABASE_URL, {
      poolMax: options.DATABASE_POOL_MAX,
      statementTimeoutMs: options.DATABASE_STATEMENT_TIMEOUT_MS,
      connectTimeoutMs: options.DATABASE_CONNECT_TIMEOUT_MS,
      prepareStatements: options.DATABASE_PREPARED_STATEMENTS,
      quietTriggers: options.quietTriggers ?? false,
      ...(onError ? { onError } : {})
    })
  }
  return openEmbedded(options.BATON_DATA_DIR)
}

export function openPostgres(url: string, given: Partial<PostgresOptions> = {}): DatabaseHandle {
  const options = { ...DEFAULT_POSTGRES_OPTIONS, ...given }
  const db = kyselyOn(createPool(url, options))
  // One statement, outside any transaction, however many tables: a NOTIFY of each.
  const wakeups = options.quietTriggers
    ? coalescedWakeups(async (tables) => {
        await sql`select pg_notify(${WORK_CHANNEL}, t) from unnest(${tables}::text[]) as t`.execute(db)
      }, options.onError ? { onError: options.onError } : {})
    : undefined
  return {
    db,
    kind: 'postgres',
    listen: (channel, onNotify) => listenOnServer(url, options, channel, onNotify),
    wakeups: wakeups ?? TRIGGERS_NOTIFY,
    async session({ timeouts }) {
      const listeners: (() => void)[] = []
      const own = kyselyOn(createPool(url, {
        ...options, poolMax: 1, idleTimeoutMs: 0, ...(timeouts ? {} : { statementTimeoutMs: 0 }),
        onConnectionEnd: () => listeners.forEach((listener) => listener())
      }))
      return { db: own, onLost: (listener) => listeners.push(listener), close: () => own.destroy() }
    },
    async close() {
      await wakeups?.close()
      await db.destroy()
    }
  }
}

/**
 * The embedded database's own settings. Postgres's 128 MB of shared buffers cost PGlite half a
 * second of every start (it clears them in WebAssembly memory) and 110 MiB of resident memory; the
 * embedded database serves one process's development and small installations, whose working set
 * fits in 16 MB, and the operating system's cache keeps the rest of its files.
 */
const EMBEDDED_SETTINGS = ['-c', 'shared_buffers=16MB']

/**
 * The embedded database in `dataDir`. A new one starts from `template` (by default the dump
 * `npm install` prepared), written out beside the cluster's folder and renamed into place when
 * complete: a first start cut off meanwhile (PGlite's own load writes into the cluster's folder)
 * would leave a half cluster that the next start took for a whole one.
 */
export async function openEmbedded(dataDir: string, template?: string): Promise<DatabaseHandle> {
  const dir = resolve(dataDir)
  const releaseLock = await lockDataDir(dir)
  try {
    const { PGlite } = await import('@electric-sql/pglite')
    const clusterDir = join(dir, 'pg')
    if (!existsSync(join(clusterDir, 'PG_VERSION'))) {
      const dump = template ?? embeddedTemplateFile()
      // Without a dump PGlite runs initdb in the folder itself. A cluster folder this process may not
      // read (another user's) reads as none here, and failed there with a bare stack trace.
      if (dump) {
        await writeCluster(dump, clusterDir).catch((error: unknown) => {
          const refused = refusal(clusterDir, error)
          throw refused ? notWritable(clusterDir, `BATON_DATA_DIR: the embedded database in ${clusterDir} could not be opened (${(error as Error).message}).`, refused, error) : error
        })
      }
    }
    // PGlite's abort also sets process.exitCode: the error tells the failure, and the caller how to exit.
    const exitCode = process.exitCode
    const pglite = await PGlite.create(clusterDir, { startParams: [...PGlite.defaultStartParams, ...EMBEDDED_SETTINGS] })
      .catch((error: unknown) => {
        process.exitCode = exitCode
        throw unopenedCluster(clusterDir, error)
      })
    return embeddedHandle(pglite, releaseLock)
  } catch (error) {
    releaseLock()
    throw error
  }
}

/** Below this much free space on its disk, an embedded database that will not open is taken for one that lacks room. */
export const LOW_DISK_BYTES = 64 * 1024 * 1024

/**
 * PGlite answers a cluster it cannot start from (damaged or truncated files) with a bare "Aborted()",
 * which ended the start in a fatal log line naming neither the embedded database nor its folder. It
 * answers a disk without room for a new WAL segment (16 MB) alike, whose files are whole: that start
 * is told to free space, not to throw the folder away. So it answers a cluster this process may not
 * write (a read-only mount, files another user owns): that start is told which file, and to give
 * access. `freeBytes` and `unwritable` are measured unless given.
 */
export function unopenedCluster(
  clusterDir: string, error: unknown, freeBytes = diskFreeBytes(clusterDir), unwritable = unwritableIn(clusterDir)
): Error {
  const said = error instanceof Error ? error.message.replace(/\.? Build with -sASSERTIONS for more info\.$/, '') : String(error)
  const opening = `BATON_DATA_DIR: the embedded database in ${clusterDir} could not be opened (PGlite: ${said}).`
  if (unwritable !== undefined) return notWritable(clusterDir, opening, unwritable, error)
  if (freeBytes !== undefined && freeBytes < LOW_DISK_BYTES) {
    return new ConfigError(`${opening} Its disk has ${(freeBytes / 1024 / 1024).toFixed(1)} MB free, and the database needs room ` +
      'for its write-ahead log (16 MB at a time): free some space and start again; the folder\'s files are likely whole.', { cause: error })
  }
  return new ConfigError(`${opening} Its files may be damaged (a crash, a full disk, a copy taken while it ran): ` +
    'restore the folder from a backup, or move it away to start with a new, empty one.', { cause: error })
}

/** The errors of a file or folder this process may not write. */
const NOT_WRITABLE = new Set(['EACCES', 'EPERM', 'EROFS'])

interface Refused {
  path: string
  code: string
}

function notWritable(clusterDir: string, opening: string, refused: Refused, error: unknown): ConfigError {
  return new ConfigError(`${opening} This process may not write ${refused.path} (${refused.code}), and the database reads and writes its files as it runs: `
    + `give the user Baton runs as access to ${clusterDir} and everything in it (or mount it read-write) and start again; the folder's files are likely whole.`, { cause: error })
}

/** The file an error says this process may not read or write, and its code; undefined for any other error. */
function refusal(fallbackPath: string, error: unknown): Refused | undefined {
  if (!(error instanceof Error)) return undefined
  const { code, path } = error as NodeJS.ErrnoException
  return code !== undefined && NOT_WRITABLE.has(code) ? { path: path ?? fallbackPath, code } : undefined
}

/**
 * The first file or folder of the cluster this process may not write (or, a folder, read), and why;
 * undefined when it may write them all, or when that cannot be told (no such folder).
 */
export function unwritableIn(clusterDir: string): Refused | undefined {
  const refused = (path: string, check: () => void) => {
    try {
      check()
      return undefined
    } catch (error) {
      return refusal(path, error)
    }
  }
  let entries: string[] = []
  const top = refused(clusterDir, () => accessSync(clusterDir, constants.W_OK))
    ?? refused(clusterDir, () => { entries = readdirSync(clusterDir, { recursive: true, encoding: 'utf8' }) })
  if (top) return top
  for (const entry of entries) {
    const path = join(clusterDir, entry)
    const found = refused(path, () => accessSync(path, constants.W_OK))
    if (found) return found
  }
  return undefined
}

/** The bytes an unprivileged process may still write on the disk holding `path`; undefined when that cannot be read. */
function diskFreeBytes(path: string): number | undefined {
  try {
    const { bavail, bsize } = statfsSync(path)
    return Number(bavail) * Number(bsize)
  } catch {
    return undefined
  }
}

const gunzipAsync = promisify(gunzip)

async function writeCluster(template: string, clusterDir: string): Promise<void> {
  // An empty folder of that name is replaced; one with files but no cluster is left for a person to look at.
  if (existsSync(clusterDir) && readdirSync(clusterDir).length > 0) {
    // As a setting to correct: a plain error ended the start in a fatal log line with its stack trace.
    throw new ConfigError(`BATON_DATA_DIR: ${clusterDir} holds files but no database cluster (no PG_VERSION): files of another program, or a first start `
      + 'cut off while it created the database; move it away to start with a new embedded database')
  }
  const loading = `${clusterDir}.loading`
  rmSync(loading, { recursive: true, force: true })
  const archive = await readFile(template)
  // A gzipped one is unzipped off the main thread (a third of a second), which meanwhile loads the server's modules.
  await extractTar(archive[0] === 0x1f && archive[1] === 0x8b ? await gunzipAsync(archive) : archive, loading)
  rmSync(clusterDir, { recursive: true, force: true })
  renameSync(loading, clusterDir)
}

/**
 * The PGlite the dialect queries, which runs statements sent together (`runTogether`) one at a
 * time, in order: it has no second process to wait on, and one round trip is none. Each statement waits
 * for a turn of the event loop before it runs.
 */
function oneAtATime(pglite: PGlite): PGlite {
  const query = async (text: string, params?: unknown[], options?: QueryOptions) => {
    // A turn of the event loop first: PGlite answers without one, and the statements queued for its one
    // connection (the dialect hands it on as a promise resolves) held off every timer and request until
    // the queue ran dry, a second and more under load.
    await new Promise((resolve) => setImmediate(resolve))
    if (text !== TOGETHER) return await pglite.query(text, params, options)
    const rows: unknown[] = []
    for (const statement of (params ?? []) as StatementText[]) rows.push((await pglite.query(statement.text, [...statement.values], options)).rows)
    return { rows, fields: [] }
  }
  return new Proxy(pglite, {
    get: (target, property) => {
      if (property === 'query') return query
      const value = Reflect.get(target, property, target) as unknown
      // PGlite's methods read its private fields: they run on PGlite itself, not on the proxy.
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value
    }
  })
}

/** The handle of an open PGlite; `onClose` runs once it is closed. */
export function embeddedHandle(pglite: PGlite, onClose: () => void = () => {}): DatabaseHandle {
  // As CommonJS, so it uses the Kysely this code loads (src/db/kysely.ts).
  const { PGliteDialect } = createRequire(import.meta.url)('kysely-pglite-dialect') as typeof import('kysely-pglite-dialect')
  const db = new Kysely<Database>({ dialect: new PGliteDialect(oneAtATime(pglite)) })
  return {
    db,
    kind: 'embedded',
    listen: async (channel, onNotify) => {
      const unlisten = await pglite.listen(channel, (payload) => onNotify(payload))
      return () => unlisten()
    },
    wakeups: TRIGGERS_NOTIFY,
    session: () => Promise.resolve({ db, onLost: () => {}, close: () => Promise.resolve() }),
    close: async () => {
      await db.destroy()
      // The dialect closes PGlite only once a statement has run; one left open keeps its process alive.
      if (!pglite.closed) await pglite.close()
      onClose()
    }
  }
}
