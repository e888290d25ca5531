// Start-up benchmark (issue 9): `npm start` on the embedded database, as a newcomer runs it, timed
// from the spawn until /health/ready answers 200.
//
//   npx tsx scripts/bench/startup.ts                 5 runs on a fresh data dir, then 5 on an existing one
//   npx tsx scripts/bench/startup.ts --runs 3 --command "node dist/src/server.js"
//
// Fresh: a new BATON_DATA_DIR each run (the cluster is loaded from the template npm install prepared,
// migrations run, an operator key is generated). Existing: the data dir of the first fresh run again.
// The port is chosen before the spawn and /health/ready is asked every 20 ms from the spawn on, so the
// time includes npm, node, the loader, the database, migrations, the app and the first answer. The
// server's "listening" line adds its own split (startupMs: database, migrations, scheduler,
// operatorKey, app = building the app and its validators, appCpu = the CPU that took, listen) and its uptime when listening.
// CPU: what npm, node and their children used until ready, which a busy machine stretches far less
// than the wall time (see treeCpuMs).
// The process is stopped with SIGTERM after each run; each run waits for the previous one's exit.
import { spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { freePort, log, ROOT, sleep, spread } from './lib.js'

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    command: { type: 'string', default: 'npm start' },
    'timeout-s': { type: 'string', default: '60' },
    help: { type: 'boolean', default: false }
  }
})

if (args.help) {
  process.stdout.write(`Usage: npx tsx scripts/bench/startup.ts [--runs N] [--command "npm start"] [--timeout-s S]

  --runs N       runs on a fresh data dir, then N on an existing one (default 5)
  --command C    what to start (default "npm start"; e.g. "node dist/src/server.js" after npm run build)
  --timeout-s S  give up on a run after S seconds (default 60)
`)
  process.exit(0)
}

const runs = Math.max(1, Number.parseInt(args.runs, 10) || 5)
const timeoutMs = (Number.parseInt(args['timeout-s'], 10) || 60) * 1000
const [command = 'npm', ...commandArgs] = args.command.split(/\s+/).filter(Boolean)

/**
 * CPU milliseconds used so far by a process and all its descendants (npm, the shell it execs node
 * from, node, esbuild's service), counting children already reaped: on a busy machine the time to
 * ready stretches with the wait for a core, the CPU used far less, so this is close to the wall time
 * on an idle machine with cores to spare.
 */
function treeCpuMs(pid: number): number {
  let ms = 0
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    ms = (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) * 10
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      for (const child of readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean)) ms += treeCpuMs(Number(child))
    }
  } catch {
    // Gone meanwhile.
  }
  return ms
}

interface Run {
  readyMs: number
  /** CPU used by the started processes until ready. */
  cpuMs: number
  /** From the server's "listening" line. */
  uptimeMs?: number
  startupMs?: Record<string, number>
}

async function startOnce(dataDir: string): Promise<Run> {
  const port = await freePort()
  const started = performance.now()
  const child = spawn(command, commandArgs, {
    cwd: ROOT,
    env: { ...process.env, BATON_DATA_DIR: dataDir, DATABASE_URL: '', BATON_ADMIN_TOKEN: '', PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info', SHUTDOWN_DELAY_MS: '0' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()))
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}:\n${output}`)
      if (performance.now() - started > timeoutMs) throw new Error(`not ready within ${timeoutMs / 1000} s:\n${output}`)
      try {
        const response = await fetch(`http://127.0.0.1:${port}/health/ready`, { signal: AbortSignal.timeout(2000) })
        await response.arrayBuffer()
        if (response.status === 200) break
      } catch {
        // Not listening yet.
      }
      await sleep(20)
    }
    const readyMs = performance.now() - started
    const cpuMs = treeCpuMs(child.pid ?? 0)
    const line = output.split('\n').find((l) => l.includes('Baton listening on'))
    const parsed = line ? (JSON.parse(line) as { uptimeMs?: number; startupMs?: Record<string, number> }) : {}
    return { readyMs, cpuMs, ...(parsed.uptimeMs === undefined ? {} : { uptimeMs: parsed.uptimeMs }), ...(parsed.startupMs ? { startupMs: parsed.startupMs } : {}) }
  } finally {
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
    await exited
    clearTimeout(timer)
  }
}

function row(label: string, run: Run): string {
  const parts = Object.entries(run.startupMs ?? {}).map(([part, ms]) => `${part} ${ms}`).join(', ')
  return `  ${label.padEnd(12)} ready ${Math.round(run.readyMs).toString().padStart(5)} ms   CPU ${run.cpuMs.toString().padStart(5)} ms   process uptime at listen ${run.uptimeMs ?? '?'} ms   (${parts})`
}

function summary(label: string, results: Run[]): string {
  const ready = spread(results.map((r) => r.readyMs))
  const cpu = spread(results.map((r) => r.cpuMs))
  const app = spread(results.map((r) => r.startupMs?.app ?? Number.NaN))
  const appCpu = spread(results.map((r) => r.startupMs?.appCpu ?? Number.NaN))
  return `${label}: ready p50 ${Math.round(ready.p50)} ms, max ${Math.round(ready.max)} ms; CPU until ready p50 ${Math.round(cpu.p50)} ms; building the app p50 ${Math.round(app.p50)} ms, max ${Math.round(app.max)} ms, CPU p50 ${Math.round(appCpu.p50)} ms`
}

const dirs: string[] = []
try {
  log(`${runs} runs of "${args.command}" on a fresh embedded data dir, then ${runs} on an existing one; ${cpus().length} cores, node ${process.version}, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`)
  const fresh: Run[] = []
  for (let i = 0; i < runs; i++) {
    const dir = mkdtempSync(join(tmpdir(), 'baton-startup-'))
    dirs.push(dir)
    const run = await startOnce(dir)
    fresh.push(run)
    process.stdout.write(`${row(`fresh ${i + 1}`, run)}\n`)
  }
  const existing: Run[] = []
  for (let i = 0; i < runs; i++) {
    const run = await startOnce(dirs[0]!)
    existing.push(run)
    process.stdout.write(`${row(`existing ${i + 1}`, run)}\n`)
  }
  process.stdout.write(`\n${summary('fresh data dir   ', fresh)}\n${summary('existing data dir', existing)}\n`)
  process.stdout.write(`load after: ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`)
} finally {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
}
