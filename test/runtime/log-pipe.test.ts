// Baton's stdout is a pipe to a log shipper in production, and the shipper may stall (its 64 KiB fill)
// or die (EPIPE). The process must go on serving and must still stop on SIGTERM: pino's destination
// held the exit until the reader came back, retrying its write every 100 ms.
import { spawn } from 'node:child_process'
import { execFileSync } from 'node:child_process'
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { createTestDatabase } from '../helpers/database.js'
import { ROOT, TS_LOADER, workerEnv } from '../helpers/process.js'

t.setTimeout(90_000)

const OPERATOR_KEY = 'a-test-operator-key-of-enough-length'

/** Baton (API and worker) whose stdout is a FIFO this test reads, or stops reading, or closes. */
async function batonOnAPipe(t: Test, settings: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), 'baton-log-pipe-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const fifo = join(dir, 'stdout')
  execFileSync('mkfifo', [fifo])
  // A real pipe (docker's and journald's are), opened at both ends here: the reader's end first, non-blocking.
  let reader: number | undefined = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK)
  const writer = openSync(fifo, constants.O_WRONLY)
  const env = { ...process.env, ...workerEnv(database.name, dir, 'log-pipe'), BATON_ADMIN_TOKEN: OPERATOR_KEY, PORT: '0', LOG_LEVEL: 'info', NODE_ENV: 'production', ...settings }
  const child = spawn(process.execPath, ['--liftoff-only', TS_LOADER, 'src/server.ts'], { cwd: ROOT, env, stdio: ['ignore', writer, 'pipe'] })
  closeSync(writer)
  const exited = new Promise<{ code: number | null, at: number }>((resolve) => child.on('exit', (code) => resolve({ code, at: Date.now() })))
  t.teardown(() => {
    child.kill('SIGKILL')
    if (reader !== undefined) closeSync(reader)
  })
  let stderr = ''
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  let text = ''
  const buffer = Buffer.alloc(65536)
  const read = () => {
    for (;;) {
      try {
        const n = readSync(reader!, buffer)
        if (n <= 0) return
        text += buffer.subarray(0, n).toString()
      } catch {
        return // EAGAIN: nothing to read now
      }
    }
  }
  for (const end = Date.now() + 60_000; !/Baton listening on/.test(text) && Date.now() < end;) {
    read()
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const port = /Baton listening on http:\/\/[^:]+:(\d+)/.exec(text)?.[1]
  if (!port) throw new Error(`Baton did not start; stdout:\n${text}\nstderr:\n${stderr}`)
  return {
    child, exited, port, stderr: () => stderr,
    closeReader() {
      closeSync(reader!)
      reader = undefined
    }
  }
}

/** Requests that each log two lines at LOG_LEVEL=info: 400 of them write more than a pipe holds. */
async function logLines(port: string, requests = 400): Promise<number[]> {
  const statuses: number[] = []
  for (let i = 0; i < requests; i += 20) {
    await Promise.all(Array.from({ length: 20 }, async () => {
      const response = await fetch(`http://127.0.0.1:${port}/v1/tenants`, { headers: { authorization: `Bearer ${OPERATOR_KEY}` } })
      await response.arrayBuffer()
      statuses.push(response.status)
    }))
  }
  return statuses
}

t.test('a stalled stdout pipe: the API answers, and SIGTERM ends the process within its grace, the last lines given up', async (t) => {
  const baton = await batonOnAPipe(t, { SHUTDOWN_GRACE_MS: '1000', SHUTDOWN_DELAY_MS: '0' })
  // The test reads no more: the pipe fills, and the lines after wait in the process.
  const statuses = await logLines(baton.port)
  t.ok(statuses.every((status) => status === 200), 'every request answered while the log could not be written')
  const live = await fetch(`http://127.0.0.1:${baton.port}/health/live`)
  t.equal(live.status, 200, '/health/live answers')
  const sent = Date.now()
  baton.child.kill('SIGTERM')
  // The grace (1 s) and the exit's wait for the pipe (1 s), with room for a busy machine: the process
  // waited for the reader, without end.
  const ended = await Promise.race([baton.exited, new Promise<undefined>((resolve) => setTimeout(resolve, 8000))])
  t.ok(ended, 'the process ended though nobody read its stdout')
  t.equal(ended?.code, 0, 'exit 0: the stop drained as it should')
  t.ok(ended && ended.at - sent < 8000, `ended ${ended ? ended.at - sent : '-'} ms after SIGTERM`)
})

t.test('a closed stdout pipe (its reader gone, EPIPE): the process serves on without its log and stops with 0', async (t) => {
  const baton = await batonOnAPipe(t, { SHUTDOWN_GRACE_MS: '1000', SHUTDOWN_DELAY_MS: '0' })
  baton.closeReader()
  const statuses = await logLines(baton.port, 100)
  t.ok(statuses.every((status) => status === 200), 'every request answered')
  t.equal(baton.child.exitCode, null, 'still running')
  baton.child.kill('SIGTERM')
  t.equal((await baton.exited).code, 0)
  t.equal(baton.stderr(), '', 'nothing on stderr')
})
