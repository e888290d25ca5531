import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { databaseUrl } from './database.js'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))

export interface RunningProcess {
  child: ChildProcess
  output(): string
  /** Resolves with the first match of the pattern in stdout or stderr. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>
  exited: Promise<number | null>
}

/** The `--import` that gives a node process the tests' TypeScript loader (test/setup/ts-loader.mjs). */
export const TS_LOADER = `--import=${pathToFileURL(join(ROOT, 'test', 'setup', 'ts-loader.mjs')).href}`

/**
 * Runs a TypeScript entry file of this repo in its own process through the tests' loader, as the test
 * files run (`npm start` runs the sources compiled, scripts/start.mjs), and with `--liftoff-only` as
 * both do (package.json); args follow the script. The child is the script's own process: signals
 * reach it directly and SIGKILL really kills it.
 */
export function runScript(script: string, env: Record<string, string>, args: string[] = []): RunningProcess {
  return runCommand(process.execPath, ['--liftoff-only', TS_LOADER, script, ...args], env)
}

/**
 * Runs a command in the repository's folder (or `cwd`), e.g. `npm start` as a reader would. With
 * `group`, it leads a process group of its own, so `process.kill(-pid)` reaches whatever it started.
 */
export function runCommand(
  command: string, argv: string[], env: Record<string, string>, options: { group?: boolean; cwd?: string } = {}
): RunningProcess {
  const child = spawn(command, argv, { cwd: options.cwd ?? ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: options.group ?? false })
  leftAtExit(child, options.group ?? false)
  let text = ''
  const waiters = new Set<() => void>()
  const onData = (chunk: Buffer) => {
    text += chunk.toString()
    for (const wake of waiters) wake()
  }
  child.stdout?.on('data', onData)
  child.stderr?.on('data', onData)
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => {
    for (const wake of waiters) wake()
    resolve(code)
  }))
  return {
    child,
    exited,
    output: () => text,
    waitFor(pattern, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => done(new Error(`timed out waiting for ${pattern}; output:\n${text}`)), timeoutMs)
        const check = () => {
          const match = text.match(pattern)
          if (match) done(undefined, match)
          else if (child.exitCode !== null) done(new Error(`process exited (${child.exitCode}) before ${pattern}; output:\n${text}`))
        }
        const done = (error?: Error, match?: RegExpMatchArray) => {
          clearTimeout(timer)
          waiters.delete(check)
          if (error) reject(error)
          else resolve(match!)
        }
        waiters.add(check)
        check()
      })
    }
  }
}

/**
 * The children still running, with whether each leads a process group: killed when the test process
 * ends, and when tap's timeout ends its file (tap signals it SIGALRM, reports, and kills it, and the
 * tests' teardowns never run: a spawned server went on holding its port and data folder).
 */
const running = new Map<ChildProcess, boolean>()
let watching = false

function leftAtExit(child: ChildProcess, group: boolean): void {
  running.set(child, group)
  // A group outlives its leader (npm gone, its node still running): it is killed all the same.
  if (!group) child.once('exit', () => running.delete(child))
  if (watching) return
  watching = true
  const killLeft = () => {
    for (const [left, asGroup] of running) {
      try {
        if (asGroup && left.pid !== undefined) process.kill(-left.pid, 'SIGKILL')
        else left.kill('SIGKILL')
      } catch {
        // Gone already.
      }
    }
  }
  process.once('exit', killLeft)
  process.once('SIGALRM', killLeft)
}

/** Runs a bash script with `set -eo pipefail`, as a reader pasting it would; resolves with its exit code and output. */
export function runBash(script: string, env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', ['-c', `set -eo pipefail\n${script}`], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()))
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()))
    child.on('exit', (code) => resolve({ code, output }))
  })
}

/** The settings of a worker process (`--role=worker`) on a test database; tests add their own on top. */
export function workerEnv(databaseName: string, dataDir: string, workerId: string): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl(databaseName),
    BATON_DATA_DIR: dataDir,
    BATON_WORKER_ID: workerId,
    BATON_ADMIN_TOKEN: '',
    LOG_LEVEL: 'warn',
    NODE_ENV: 'test',
    SMTP_URL: '',
    // Several workers run at once: each listens for probes on a free port of its own.
    WORKER_HTTP_PORT: '0'
  }
}
