import { randomBytes } from 'node:crypto'
import { linkSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { ConfigError } from '../config.js'
import { makeDirectory } from '../lib/make-directory.js'

export class DataDirBusyError extends Error {
  override name = 'DataDirBusyError'
}

/** How often the holder rewrites its lock, and how long a lock from another pid space must stay unchanged to count as left behind. */
export interface LockTiming {
  beatMs: number
  staleMs: number
  /** Told when another process took the lock over (this one's beats stood still for staleMs): by default an uncaught error. */
  onLost?: (error: DataDirBusyError) => void
  /** Runs between the look at the lock and the taking of it: a test's rival starts there. */
  afterLook?: () => void
}

/**
 * A holder's event loop may be held by a long statement of the embedded database (it runs on the
 * main thread): ten beats missed in a row, not one, tell a crash.
 */
const LOCK_TIMING: LockTiming = { beatMs: 1000, staleMs: 10_000 }

/** How long a process that took over a lock left behind waits before it looks again (beats polls every 100 ms). */
const TAKEOVER_SETTLE_MS = 300

/** Errors of a file system without hard links: the lock is then written over, and looked at again. */
const NO_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS'])

/**
 * The embedded database is single-process: a pid file keeps a second process from opening it. Its
 * first line is the pid; on Linux a second line tells that process from a later one given the same
 * pid after a crash (the boot and its start time, from /proc), so such a stale lock is taken over.
 * Where that cannot be read, a live process with the pid holds the lock, as before.
 *
 * A pid means something only in the pid space that gave it: a second container on a shared volume
 * (both pid 1, or the pid unknown in its own space) took a live lock for a crashed one, and two
 * processes wrote one cluster. So the lock also names its pid space and host, and its holder rewrites
 * it every `beatMs`: a lock from another pid space is taken over only once it stayed unchanged for
 * `staleMs`, which the start waits out.
 */
export async function lockDataDir(dir: string, timing: LockTiming = LOCK_TIMING): Promise<() => void> {
  const lockFile = join(dir, 'baton.pid')
  try {
    makeDirectory(dir)
  } catch (error) {
    throw unusableDataDir(dir, error)
  }
  const space = pidSpace()
  // One look decides: a lock that is there (even one that cannot be read) is taken over, never linked over.
  const found = lockText(lockFile)
  const holder = found === undefined ? undefined : parseHolder(found)
  if (holder !== undefined && await holds(holder, space, lockFile, timing.staleMs)) {
    const where = holder.space !== undefined && holder.space !== space ? ` on host ${holder.host ?? 'unknown'} (another container or machine)` : ''
    throw new DataDirBusyError(
      `The embedded database in ${dir} is in use by process ${holder.pid}${where}. ` +
        'It serves one process at a time: stop that process, or set DATABASE_URL to share a Postgres server.'
    )
  }
  const identity = processIdentity(process.pid)
  let written: string | undefined
  const text = () => {
    // The beat is the wall clock's time: a reader only looks for a change, and a person reading the file sees when it last beat.
    const lines = identity === undefined ? [String(process.pid)] : [String(process.pid), identity, space ?? '', hostname(), `beat ${Date.now()}`]
    return `${lines.join('\n')}\n`
  }
  // Written aside and then renamed over the lock (or linked to it), so that a reader never sees it half written.
  // Its own name: two containers may share a host name and a pid (pid 1).
  const aside = `${lockFile}.${hostname()}.${process.pid}.${randomBytes(4).toString('hex')}`
  const write = () => {
    const next = text()
    writeFileSync(aside, next)
    renameSync(aside, lockFile)
    written = next
  }
  // A lock where there was none appears whole and only if still none is there (link fails if one is):
  // of two processes starting at once on a free folder, the second finds the first's lock.
  const create = () => {
    const next = text()
    writeFileSync(aside, next)
    try {
      linkSync(aside, lockFile)
      written = next
    } finally {
      rmSync(aside, { force: true })
    }
  }
  // Another process took the lock over while this one's beats stood still (a long statement, a paused
  // container): writing it back, or removing it at the release, would let two processes write one cluster.
  const ours = () => {
    const now = lockText(lockFile)
    return now === undefined || now === written
  }
  // Where none is: linked into place (EEXIST if one appeared meanwhile); written over where links are not to be had.
  const make = (): 'linked' | 'written' => {
    try {
      create()
      return 'linked'
    } catch (error) {
      if (!NO_LINKS.has((error as NodeJS.ErrnoException).code ?? '')) throw error
      write()
      return 'written'
    }
  }
  // A lock left behind (a crash's, in this pid space or another) is written over, which two processes
  // may do at once, each right after its last look: the later rename wins, and the other, looking again
  // once both could have written, finds it no longer its own and stops.
  let takingOver = found !== undefined
  timing.afterLook?.()
  try {
    if (takingOver) write()
    else takingOver = make() === 'written'
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new DataDirBusyError(`The embedded database in ${dir} is in use by process ${readHolder(lockFile)?.pid ?? 'unknown'}, which started at the same time. `
        + 'It serves one process at a time: stop that process, or set DATABASE_URL to share a Postgres server.')
    }
    throw unusableDataDir(dir, error)
  }
  if (takingOver) {
    await new Promise((resolve) => setTimeout(resolve, Math.min(TAKEOVER_SETTLE_MS, timing.staleMs)))
    if (!ours()) {
      const taker = readHolder(lockFile)
      throw new DataDirBusyError(`The embedded database in ${dir} was taken over at the same time by process ${taker?.pid ?? 'unknown'} `
        + `on host ${taker?.host ?? 'unknown'}. It serves one process at a time: stop that process, or set DATABASE_URL to share a Postgres server.`)
    }
  }
  const beat = setInterval(() => {
    let now: string | undefined
    try {
      now = readFileSync(lockFile, 'utf8')
    } catch (error) {
      // A lock that cannot be read now (no file descriptor to spare, EMFILE) tells nothing of its holder: the
      // next beat looks again. Read as empty, it was taken for another's, and the process ended (a worker past
      // its open-files limit, which otherwise waits it out). One removed is made again below.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') return
    }
    if (now !== undefined && now !== written) {
      clearInterval(beat)
      const taker = parseHolder(now)
      const error = new DataDirBusyError(`The embedded database in ${dir} was taken over by process ${taker?.pid ?? 'unknown'} on host ${taker?.host ?? 'unknown'}: `
        + `this process's lock was not rewritten for ${timing.staleMs} ms. Two processes must not write one data folder: stop one of them.`)
      const onLost = timing.onLost ?? ((lost: DataDirBusyError) => process.nextTick(() => { throw lost }))
      onLost(error)
      return
    }
    try {
      // A lock removed meanwhile is made again as a new one is, so that it never overwrites one another
      // process has just made (EEXIST: the next beat finds the lock not its own).
      if (now === undefined) make()
      else write()
    } catch {
      // A disk full a moment: the next beat writes it again, and staleMs is many beats.
    }
  }, timing.beatMs)
  beat.unref()
  return () => {
    clearInterval(beat)
    if (ours()) rmSync(lockFile, { force: true })
  }
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
  /** The boot and pid namespace its pid belongs to; absent as identity is, or where the namespace cannot be read. */
  space?: string
  host?: string
  /** The whole file, which changes with each beat of a live holder. */
  text: string
}

/** The lock's text; undefined only where there is no lock file (one that cannot be read reads as empty). */
function lockText(lockFile: string): string | undefined {
  try {
    return readFileSync(lockFile, 'utf8')
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ENOENT' ? undefined : ''
  }
}

function readHolder(lockFile: string): Holder | undefined {
  const text = lockText(lockFile)
  return text === undefined ? undefined : parseHolder(text)
}

function parseHolder(text: string): Holder | undefined {
  const [first, second, space, host] = text.split('\n').map((line) => line.trim())
  const pid = Number.parseInt(first ?? '', 10)
  if (!Number.isInteger(pid)) return undefined
  return { pid, text, ...(second ? { identity: second } : {}), ...(space ? { space } : {}), ...(host ? { host } : {}) }
}

/**
 * Whether the process that wrote the lock still runs. In this pid space its pid and start time tell;
 * from another one only its beats can, watched for up to `staleMs`. When nothing can be told, any
 * live process with its pid holds it.
 */
async function holds(holder: Holder, space: string | undefined, lockFile: string, staleMs: number): Promise<boolean> {
  if (holder.space !== undefined && holder.space !== space) return beats(holder.text, lockFile, staleMs)
  if (holder.pid === process.pid || !isAlive(holder.pid)) return false
  if (holder.identity === undefined) return true
  const now = processIdentity(holder.pid)
  return now === undefined || now === holder.identity
}

/**
 * Whether the lock file changes (or is gone: its holder stopped and the folder is free) within `staleMs`,
 * timed on a timer that only goes forward: on the wall clock, a step forward ended the watch before a beat
 * and took a live lock over, and a step back held the start for as long as the step.
 */
async function beats(text: string, lockFile: string, staleMs: number): Promise<boolean> {
  const until = performance.now() + staleMs
  while (performance.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, Math.min(100, staleMs)))
    const now = readHolder(lockFile)
    if (now === undefined) return false
    if (now.text !== text) return true
  }
  return false
}

/** This process's boot and pid namespace: pids in a lock from another one say nothing here. Undefined without /proc. */
function pidSpace(): string | undefined {
  try {
    return `${readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()} ${readlinkSync('/proc/self/ns/pid')}`
  } catch {
    return undefined
  }
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
