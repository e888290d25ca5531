import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigError } from '../config.js'

export class DataDirBusyError extends Error {
  override name = 'DataDirBusyError'
}

/**
 * The embedded database is single-process: a pid file keeps a second process from opening it. Its
 * first line is the pid; on Linux a second line tells that process from a later one given the same
 * pid after a crash (the boot and its start time, from /proc), so such a stale lock is taken over.
 * Where that cannot be read, a live process with the pid holds the lock, as before.
 */
export function lockDataDir(dir: string): () => void {
  const lockFile = join(dir, 'baton.pid')
  try {
    mkdirSync(dir, { recursive: true })
  } catch (error) {
    throw unusableDataDir(dir, error)
  }
  const holder = readHolder(lockFile)
  if (holder !== undefined && holder.pid !== process.pid && holds(holder)) {
    throw new DataDirBusyError(
      `The embedded database in ${dir} is in use by process ${holder.pid}. ` +
        'It serves one process at a time: stop that process, or set DATABASE_URL to share a Postgres server.'
    )
  }
  const identity = processIdentity(process.pid)
  try {
    writeFileSync(lockFile, identity === undefined ? String(process.pid) : `${process.pid}\n${identity}\n`)
  } catch (error) {
    throw unusableDataDir(dir, error)
  }
  return () => rmSync(lockFile, { force: true })
}

/**
 * A data dir that cannot be made or written (a file, a read-only disk, a full one, no permission), as
 * the setting to correct: it ended the start in a fatal log line naming neither BATON_DATA_DIR nor
 * the embedded database.
 */
function unusableDataDir(dir: string, error: unknown): Error {
  if (!(error instanceof Error) || !('code' in error)) return error as Error
  return new ConfigError(`BATON_DATA_DIR: the embedded database cannot be kept in ${dir}: ${error.message}`)
}

interface Holder {
  pid: number
  /** Absent in a lock written where /proc could not be read, or by an older Baton. */
  identity?: string
}

function readHolder(lockFile: string): Holder | undefined {
  try {
    const [first, second] = readFileSync(lockFile, 'utf8').split('\n')
    const pid = Number.parseInt(first ?? '', 10)
    if (!Number.isInteger(pid)) return undefined
    return second ? { pid, identity: second.trim() } : { pid }
  } catch {
    return undefined
  }
}

/** Whether the process that wrote the lock still runs; when that cannot be told, any live process with its pid does. */
function holds(holder: Holder): boolean {
  if (!isAlive(holder.pid)) return false
  if (holder.identity === undefined) return true
  const now = processIdentity(holder.pid)
  return now === undefined || now === holder.identity
}

/**
 * What tells a process from a later one with the same pid: the boot it runs in and its start time in
 * clock ticks since that boot (field 22 of /proc/<pid>/stat). Undefined without /proc.
 */
function processIdentity(pid: number): string | undefined {
  try {
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command's name (field 2) may hold spaces and parentheses: the fields after its last ")" are plain.
    const startTicks = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
    return boot && startTicks && /^\d+$/.test(startTicks) ? `${boot} ${startTicks}` : undefined
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
