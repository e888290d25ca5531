// The log's destination on a real pipe that this test reads or does not: what it keeps is bounded, what
// it drops is counted and told once the pipe is read again, and a reader gone costs only the log.
import { execFileSync } from 'node:child_process'
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { logDestination } from '../src/log-destination.js'

/** A FIFO's two ends, both non-blocking, as a pipe's stdout is once Node has read process.stdout. */
function pipe(t: Test): { reader: number; writer: number } {
  const dir = mkdtempSync(join(tmpdir(), 'baton-log-destination-'))
  const fifo = join(dir, 'pipe')
  execFileSync('mkfifo', [fifo])
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK)
  const writer = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK)
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return { reader, writer }
}

/** Everything the pipe holds now. */
function drain(fd: number): string {
  const buffer = Buffer.alloc(65536)
  let text = ''
  for (;;) {
    try {
      const n = readSync(fd, buffer)
      if (n <= 0) return text
      text += buffer.subarray(0, n).toString()
    } catch {
      return text // EAGAIN: empty
    }
  }
}

const LINE = `{"level":30,"msg":"${'x'.repeat(90)}"}\n`

t.test('a pipe nobody reads: at most the buffer is kept, the rest is dropped and counted, and the count is told once it is read', async (t) => {
  const { reader, writer } = pipe(t)
  const destination = logDestination(writer, 16 * 1024)
  t.teardown(() => {
    destination.stream.destroy()
    closeSync(reader)
  })
  const told: number[] = []
  destination.onRecovered((dropped) => told.push(dropped))
  const lines = 5000 // 500 KB: more than the pipe (64 KiB) and the buffer (16 KiB) together
  for (let i = 0; i < lines; i++) destination.stream.write(LINE)
  let read = ''
  for (const end = Date.now() + 5000; told.length === 0 && Date.now() < end;) {
    read += drain(reader)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  read += drain(reader)
  const written = read.split('\n').filter(Boolean).length
  t.equal(told.length, 1, 'the drop is told once the pipe is read again')
  t.ok(written <= (64 + 16) * 1024 / LINE.length + 1, `only what the pipe and the buffer hold was kept (${written} lines)`)
  t.equal((told[0] ?? 0) + written, lines, `each line is written or counted as dropped (${told[0]} dropped)`)
  t.ok(read.split('\n').filter(Boolean).every((line) => line === LINE.trim()), 'the lines kept are whole')
  // Once told, the count starts again from nothing.
  destination.stream.write(LINE)
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(drain(reader), LINE)
  t.same(told, [told[0]], 'nothing more was dropped')
})

t.test('a pipe whose reader is gone (EPIPE): the writes go nowhere and nothing is thrown', async (t) => {
  const { reader, writer } = pipe(t)
  const destination = logDestination(writer, 16 * 1024)
  t.teardown(() => destination.stream.destroy())
  closeSync(reader)
  for (let i = 0; i < 100; i++) destination.stream.write(LINE)
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.doesNotThrow(() => {
    destination.stream.write(LINE)
    destination.stream.flushSync()
  }, 'the log is given up, not the process')
})

// stdout sent to a file whose disk is full, say: the log is no more, and the process goes on; said once on stderr.
t.test('a destination failing otherwise than with its reader gone says so once on stderr, and the writes go nowhere', async (t) => {
  const readOnly = openSync('/dev/null', 'r')
  t.teardown(() => closeSync(readOnly))
  const said: string[] = []
  const write = process.stderr.write
  process.stderr.write = ((chunk: string | Uint8Array) => said.push(String(chunk)) > 0) as typeof process.stderr.write
  t.teardown(() => { process.stderr.write = write })
  const { stream } = logDestination(readOnly)
  stream.write('{"msg":"first"}\n')
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.doesNotThrow(() => stream.write('{"msg":"second"}\n'))
  await new Promise((resolve) => setTimeout(resolve, 50))
  process.stderr.write = write
  t.match(said, [/^baton: the log can no longer be written to stdout \(EBADF\); the process goes on without it\n$/], 'once, naming the error')
})
