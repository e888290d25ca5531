// `npm run drill -- <name> [--short]`: runs a fault drill against real Baton processes and a real
// Postgres and prints its counts; exits 1 when a count breaks its promise. Names: kill, database,
// shutdown, downtime, hang, or all. `--short` runs the bounded versions CI uses.
import { parseArgs } from 'node:util'
import { DATABASE_FULL, DATABASE_SHORT, databaseDrill } from './database.js'
import { DOWNTIME_FULL, DOWNTIME_SHORT, downtimeDrill } from './downtime.js'
import { HANG_FULL, HANG_SHORT, hangDrill } from './hang.js'
import { KILL_FULL, KILL_SHORT, killDrill } from './kill.js'
import { SHUTDOWN_FULL, SHUTDOWN_SHORT, shutdownDrill } from './shutdown.js'

const drills: Record<string, (short: boolean) => Promise<boolean>> = {
  kill: (short) => killDrill(short ? KILL_SHORT : KILL_FULL),
  database: (short) => databaseDrill(short ? DATABASE_SHORT : DATABASE_FULL),
  shutdown: (short) => shutdownDrill(short ? SHUTDOWN_SHORT : SHUTDOWN_FULL),
  downtime: (short) => downtimeDrill(short ? DOWNTIME_SHORT : DOWNTIME_FULL),
  hang: (short) => hangDrill(short ? HANG_SHORT : HANG_FULL)
}

const { positionals, values } = parseArgs({ allowPositionals: true, options: { short: { type: 'boolean', default: false } } })
const names = positionals[0] === 'all' ? Object.keys(drills) : positionals
const unknown = names.filter((n) => !(n in drills))
if (names.length === 0 || unknown.length > 0) {
  process.stderr.write(`usage: npm run drill -- <${[...Object.keys(drills), 'all'].join('|')}> [--short]${unknown.length ? `\nunknown drill: ${unknown.join(', ')}` : ''}\n`)
  process.exit(2)
}
let kept = true
for (const name of names) {
  const began = Date.now()
  kept = (await drills[name]!(values.short)) && kept
  process.stdout.write(`  (${name} took ${Math.round((Date.now() - began) / 1000)} s)\n`)
}
process.exit(kept ? 0 : 1)
