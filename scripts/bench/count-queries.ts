// Diagnostics for the scheduler benchmark (--count-queries): preloaded into the worker with
// `--import`, it counts the worker's SQL statements by kind and the time each kind spent from
// sending to answer (pool wait excluded), and prints them as JSON to stderr when asked and at exit.
// The worker's own code is untouched: this wraps pg.Client.prototype.query, which Kysely's
// PostgresDialect calls for every statement.
import { writeSync } from 'node:fs'
import pg from 'pg'

interface Tally {
  count: number
  ms: number
}

const tallies = new Map<string, Tally>()
const MARK = 'BENCH_QUERY_COUNTS '

/** A short name for a statement: its first words, whitespace folded, literals left as they are. */
function kindOf(text: string): string {
  const folded = text.replace(/\s+/g, ' ').trim()
  // Transactions and the scheduler's CTEs are told apart by their first 70 characters.
  return folded.slice(0, 70)
}

function note(kind: string, started: number): void {
  const tally = tallies.get(kind) ?? { count: 0, ms: 0 }
  tally.count += 1
  tally.ms += performance.now() - started
  tallies.set(kind, tally)
}

type Query = (this: pg.Client, ...args: unknown[]) => unknown
const prototype = pg.Client.prototype as unknown as { query: Query }
const original = prototype.query
prototype.query = function (this: pg.Client, ...args: unknown[]) {
  const first = args[0]
  const text = typeof first === 'string' ? first : (first as { text?: string } | undefined)?.text ?? '?'
  const kind = kindOf(text)
  const started = performance.now()
  const result = original.apply(this, args)
  if (result && typeof (result as Promise<unknown>).then === 'function') {
    ;(result as Promise<unknown>).then(() => note(kind, started), () => note(`${kind} (failed)`, started))
  } else {
    note(kind, started)
  }
  return result
}

// A line "dump" on stdin prints the tallies so far and starts afresh (the bench brackets each
// phase with it; a signal would not do: close-with-grace treats SIGUSR2 as a shutdown). Exit
// prints what is left.
let dumps = 0
function dump(): void {
  const summary = Object.fromEntries([...tallies].sort((a, b) => b[1].count - a[1].count))
  writeSync(2, `${MARK}${dumps++} ${JSON.stringify(summary)}\n`)
  tallies.clear()
}
let input = ''
process.stdin.on('data', (chunk: Buffer) => {
  input += chunk.toString()
  for (let end = input.indexOf('\n'); end >= 0; end = input.indexOf('\n')) {
    if (input.slice(0, end).trim() === 'dump') dump()
    input = input.slice(end + 1)
  }
})
// Reading stdin must not keep the worker alive once it has shut down.
;(process.stdin as unknown as { unref?: () => void }).unref?.()
process.on('exit', dump)
