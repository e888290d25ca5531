// What the benchmarks share: CPU and memory from /proc, percentiles, child node processes, waiting.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const SERVER_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
export const CACHE = 'node_modules/.cache/baton-bench'

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
export const log = (message: string) => process.stderr.write(`[bench] ${message}\n`)

export function databaseUrl(name: string): string {
  const url = new URL(SERVER_URL)
  url.pathname = `/${name}`
  return url.toString()
}

/** Linear interpolation between closest ranks, as Postgres's percentile_cont. */
function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  const position = p * (sorted.length - 1)
  const low = Math.floor(position)
  const high = Math.ceil(position)
  const a = sorted[low] ?? Number.NaN
  const b = sorted[high] ?? Number.NaN
  return a + (b - a) * (position - low)
}

export interface Spread {
  p50: number
  p95: number
  p99: number
  max: number
  mean: number
}

export function spread(values: number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b)
  const mean = sorted.reduce((sum, v) => sum + v, 0) / (sorted.length || 1)
  return { p50: percentile(sorted, 0.5), p95: percentile(sorted, 0.95), p99: percentile(sorted, 0.99), max: sorted.at(-1) ?? Number.NaN, mean }
}

/** Kernel figures of one process from /proc: peak and current resident set, CPU time used. */
export function procStatus(pid: number): { hwmKb: number; rssKb: number; cpuMs: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const kb = (field: string) => Number(status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'))?.[1] ?? Number.NaN)
    // utime and stime are fields 14 and 15; the command name (field 2) may hold spaces, so count after ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(fields[11]) + Number(fields[12])
    return { hwmKb: kb('VmHWM'), rssKb: kb('VmRSS'), cpuMs: ticks * 10 }
  } catch {
    return undefined
  }
}

/** Busy and total jiffies of the whole machine, for how loaded it was during a phase. */
export function machineCpu(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? ''
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = line.trim().split(/\s+/).slice(1).map(Number)
  const busy = user + nice + system + irq + softirq + steal
  return { busy, total: busy + idle + iowait }
}

export interface Child {
  name: string
  process: ChildProcess
  output(): string
  exited: Promise<number | null>
}

/**
 * Runs node with these arguments as ONE process (for TypeScript, tsx is a loader, `--import tsx`,
 * not a wrapper that spawns node again), so the child's pid is the one to watch in /proc.
 */
export function runNode(name: string, argv: string[], env: Record<string, string>): Child {
  const child = spawn(process.execPath, argv, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe']
  })
  let text = ''
  const keep = (chunk: Buffer) => {
    text += chunk.toString()
    if (text.length > 200_000) text = text.slice(-100_000)
  }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))))
  return { name, process: child, output: () => text, exited }
}

/**
 * The node flags `npm start` passes before its script (package.json; heap settings such as
 * --max-semi-space-size), which the benchmarks pass to the Baton processes they start, so they are
 * measured as they run. `defaults`: none of them, node's own settings. `extra` (an environment
 * variable's words) come after them: a later flag wins. `root`: the tree whose package.json says them.
 */
export function nodeFlags(defaults: boolean | undefined, extra: string | undefined, root = ROOT): string[] {
  const { scripts } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
  const words = (scripts.start ?? '').split(/\s+/)
  const start = words.slice(words.indexOf('node') + 1)
  const own = start.slice(0, Math.max(0, start.findIndex((w) => !w.startsWith('--') || w === '--import')))
  return [...(defaults ? [] : own), ...(extra ?? '').split(/\s+/).filter(Boolean)]
}

/** Compiles src/ and migrations/ as `npm run build` does, into a cache folder (node_modules resolve from there). */
export function compile(): string {
  const outDir = join(ROOT, CACHE)
  log(`compiling the worker into ${CACHE}`)
  const result = spawnSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', outDir],
    { cwd: ROOT, stdio: 'inherit' })
  if (result.status !== 0) throw new Error('tsc failed')
  return outDir
}

export async function stopChild(child: Child, graceMs: number): Promise<number | null> {
  if (child.process.exitCode !== null || child.process.signalCode !== null) return child.exited
  child.process.kill('SIGTERM')
  const timer = setTimeout(() => child.process.kill('SIGKILL'), graceMs)
  try {
    return await child.exited
  } finally {
    clearTimeout(timer)
  }
}

export async function waitFor<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined> | T | undefined, everyMs = 50): Promise<T> {
  const until = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined) return value
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(everyMs)
  }
}


// A UUIDv7 made in SQL (Postgres 15 has no uuidv7()): the 48-bit millisecond time over a random v4,
// then the version nibble 0100 → 0111. Like src/lib/ids.ts, minus its in-process sequence.
export const uuid7 = (ts: string) => `encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing
  substring(int8send(floor(extract(epoch from ${ts}) * 1000)::bigint) from 3) from 1 for 6), 52, 1), 53, 1), 'hex')::uuid`

/** A port free on 127.0.0.1 now, handed out by the kernel (a random pick could fall among the ephemeral ports in use). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0))
    })
  })
}
