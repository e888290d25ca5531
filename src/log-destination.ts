import sonicBoom, { type SonicBoom } from 'sonic-boom'

// The package is CommonJS whose module.exports is the class; its types declare it as a default export,
// which NodeNext reads as the module's namespace.
const SonicBoomClass = sonicBoom as unknown as typeof SonicBoom

/**
 * How much log a process keeps while its stdout is not read (a log shipper stopped or slow: the pipe's
 * 64 KiB are full). pino's own destination kept all of it: 50 MB of RSS in 12 s of API load, without end.
 */
export const LOG_BUFFER_BYTES = 4 * 1024 * 1024

/** How long the exit waits for a pipe nobody reads to take the last lines, before it exits without them. */
export const EXIT_FLUSH_MS = 1000

export interface LogDestination {
  stream: SonicBoom
  /** Told, once the log is written again, how many lines were dropped meanwhile (to log it: the lines are gone). */
  onRecovered(report: (droppedLines: number) => void): void
}

/**
 * Where the JSON log lines go: stdout (fd 1), written without waiting, as pino's default destination, but
 * bounded where it was not. A reader that stalls costs at most `bufferBytes`, the lines past it are
 * counted and dropped, and the count is told once the pipe takes lines again; a reader that is gone
 * (EPIPE) costs the log and nothing else; and the exit waits at most `exitFlushMs` for a stalled pipe,
 * where pino's exit handler retried its write every 100 ms until the reader came back (SIGTERM did not
 * end the process, nor did the shutdown's hard limit, whose exit waited in the same handler).
 *
 * The fd must be non-blocking for a write to a full pipe to fail (EAGAIN) instead of waiting: Node
 * makes a pipe's stdout so once process.stdout is read, which server.ts does first.
 */
export function logDestination(fd = 1, bufferBytes = LOG_BUFFER_BYTES, exitFlushMs = EXIT_FLUSH_MS): LogDestination {
  let exitDeadline: number | undefined
  // Retried every 100 ms while the process runs; at exit, only until the deadline (flushSync then throws).
  const retryEAGAIN = () => exitDeadline === undefined || performance.now() < exitDeadline
  const stream = new SonicBoomClass({ fd, maxLength: bufferBytes, retryEAGAIN })
  let dropped = 0
  let report: (droppedLines: number) => void = () => {}
  stream.on('drop', (data: string) => {
    dropped += lineCount(data)
  })
  // 'drain': all that was kept is written, so the pipe is read again.
  stream.on('drain', () => {
    if (dropped === 0) return
    const lines = dropped
    dropped = 0
    report(lines)
  })
  stream.on('error', (error: NodeJS.ErrnoException) => {
    // The reader is gone (EPIPE) or the fd unusable: the process goes on without its log, as it did
    // under pino's destination; any other error, unheard, ended the process. Another error than a reader
    // gone (a file stdout was sent to, its disk full) is said once on stderr, as the log is no more.
    stream.write = () => true
    stream.flushSync = () => {}
    if (error.code !== 'EPIPE') {
      try {
        process.stderr.write(`baton: the log can no longer be written to stdout (${error.code ?? error.message}); the process goes on without it\n`)
      } catch {
        // stderr is gone as well.
      }
    }
  })
  process.once('exit', () => {
    exitDeadline = performance.now() + exitFlushMs
    try {
      stream.flushSync()
    } catch {
      // Still full at the deadline (EAGAIN), or the reader gone: the last lines are lost, the exit is not held.
    }
  })
  return { stream, onRecovered: (told) => (report = told) }
}

/** pino writes one line per call, but sonic-boom may hand a drop of several. */
function lineCount(data: string | Buffer): number {
  const text = typeof data === 'string' ? data : data.toString('utf8')
  let count = 0
  for (let at = text.indexOf('\n'); at !== -1; at = text.indexOf('\n', at + 1)) count++
  return Math.max(count, 1)
}
