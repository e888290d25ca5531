import pino, { type Logger } from 'pino'
import type { Clock } from './adapters/clock.js'
import { startDatabaseClock } from './adapters/database-clock.js'
import { asDatabaseUrlProblem, ConfigError, listenProblem, loadConfig, shutdownDelayMs, type Config } from './config.js'
import { DataDirBusyError, openDatabase, type DatabaseHandle } from './db/connect.js'
import { databaseTime } from './db/database-time.js'
import type { Kysely } from './db/kysely.js'
import { checkEncoding } from './db/encoding.js'
import { migrateToLatest, migrationsToWaitFor, unknownMigrations, UnknownMigrationsError, UnrecordedSchemaError } from './db/migrate.js'
import { refuseSharedSessions } from './db/own-session.js'
import { onShutdown, whenDatabaseAnswers, whenMigrated } from './lifecycle.js'
import { BatonMetrics } from './lib/metrics.js'
import { hashKey } from './lib/keys.js'
import { resolveOperatorKey } from './modules/auth/operator-key.js'
import { findOperatorKeyHash } from './modules/auth/repository.js'
import type { WorkerServer } from './modules/health/worker-server.js'
import { logOptions } from './log-options.js'
import { logDestination } from './log-destination.js'

/** `all` serves the API and runs the scheduler (npm start); `api` and `worker` scale out separately. */
type Role = 'all' | 'api' | 'worker'

function roleFrom(argv: string[]): Role {
  // `--role worker` (a space, not "=") ran the API and the scheduler, as if no role were given.
  const unknown = argv.find((a) => !a.startsWith('--role='))
  if (unknown !== undefined) throw new ConfigError(`unknown argument "${unknown}": the one argument is --role=all, --role=api or --role=worker`)
  const role = argv.find((a) => a.startsWith('--role='))?.slice('--role='.length) ?? 'all'
  if (role === 'all' || role === 'api' || role === 'worker') return role
  throw new ConfigError(`--role must be all, api or worker, not "${role}"`)
}

async function main(config: Config, role: Role): Promise<void> {
  const log = logger(config)
  // How long each part of the start took, in the "listening" line (scripts/bench/startup.ts reads it).
  const startupMs: Record<string, number> = {}
  let mark = performance.now()
  const took = (part: string) => {
    const now = performance.now()
    startupMs[part] = Math.round(now - mark)
    mark = now
  }
  // The modules this role needs load while the database opens and migrates (much of that waits).
  const schedulerModule = role === 'api' ? undefined : preload(import('./scheduler/build.js'))
  const appModule = role === 'worker' ? undefined : preload(import('./app.js'))
  // A process that only serves the API announces its work itself, coalesced (src/db/wakeups.ts).
  const opening = openDatabase({ ...config, quietTriggers: role === 'api' }, (error) => log.warn({ err: error }, 'database connection lost; it reconnects on next use'))
  // A signal while the embedded database opens (seconds on a first start) closes it once open: the
  // default handler ended the process by the signal, not with 0, and left its lock file behind.
  let close: (signal?: NodeJS.Signals) => Promise<void> = () => opening.then((database) => database.close(), () => {})
  // From the signal on, /health/ready answers 503 while the process drains, so a load balancer moves on.
  let stopping = false
  const delayMs = shutdownDelayMs(config, role)
  onShutdown(log, delayMs + config.SHUTDOWN_GRACE_MS + 5000, (signal) => {
    stopping = true
    return close(signal)
  })
  const database = await opening
  close = () => database.close()
  took('database')
  // Before the migrations: a database of another encoding is refused while Baton has no tables in it, warned of once it has (src/db/encoding.ts).
  if (database.kind === 'postgres') {
    const encoding = await whenDatabaseAnswers(log, 'the database\'s encoding', () => checkEncoding(database.db))
    if (encoding) log.warn({}, encoding)
  }
  if (config.BATON_MIGRATE_ON_START) {
    const ran = await whenDatabaseAnswers(log, 'migrations', () => migrateToLatest(database))
    if (ran.length > 0) log.info({ migrations: ran }, `ran ${ran.length} migration${ran.length === 1 ? '' : 's'}`)
  } else {
    await whenMigrated(log, async () => {
      const pending = await migrationsToWaitFor(database.db as unknown as Kysely<unknown>)
      // No other process can open the embedded database while this one holds it: the wait had no end.
      if (pending.length > 0 && database.kind === 'embedded') {
        throw new ConfigError(`BATON_MIGRATE_ON_START=false, and the embedded database lacks ${pending.length} migration${pending.length === 1 ? '' : 's'} ` +
          `(${pending.join(', ')}), which no other process can run while this one holds it: start with BATON_MIGRATE_ON_START=true, or run npm run db:migrate before starting`)
      }
      return pending
    })
  }
  // A newer version's migrations (it ran, then was rolled back) are left as they are, as db:migrate leaves them, but said:
  // the start went on without a word.
  const newer = await unknownMigrations(database.db as unknown as Kysely<unknown>).catch(() => [])
  if (newer.length > 0) {
    log.warn({ migrations: newer }, `the database holds migrations this version of Baton does not have (${newer.join(', ')}): a newer version ran them, and this one runs on the schema they left`)
  }
  took('migrations')
  // Every process goes by the database's clock: leases, due times and apiClaims pass between processes on other machines.
  const clock = await whenDatabaseAnswers(log, 'the database\'s clock', () => startDatabaseClock((elapsed) => databaseTime(database.db, elapsed), log))
  // One registry per process: the API's /metrics shows the counts of the scheduler beside it.
  const metrics = new BatonMetrics()
  if (role !== 'api' && database.kind === 'postgres') await whenDatabaseAnswers(log, 'the worker\'s own session', () => refuseSharedSessions(database))
  // Each role loads only its own part: a worker never loads Fastify, an API process never the HTTP client.
  const scheduler = !schedulerModule ? undefined
    : (await schedulerModule).buildScheduler(config, database, clock, log.child({ component: 'scheduler' }), metrics)
  took('scheduler')
  if (role === 'worker') {
    const probes = await listenAsWorker(config, database, clock, metrics, log, () => stopping)
    close = async () => {
      await scheduler?.stop(config.SHUTDOWN_GRACE_MS)
      await probes.close()
      // The stop may have left a statement waiting on a lock held elsewhere (see Scheduler.stop), and
      // the pool's close waited for it, as the API's below.
      await closeCutOff(database)
    }
    await scheduler?.start()
    log.info({ database: database.kind, address: probes.address }, `Baton worker started; /health/live, /health/ready and /metrics on ${probes.address}`)
    return
  }

  const operatorKey = await whenDatabaseAnswers(log, 'operator key', () => resolveOperatorKey(database.db, config.BATON_ADMIN_TOKEN))
  // Shown as soon as it is kept: shown after listening, a start that ended before (a port in use, a
  // Ctrl-C, a crash) kept a key no one saw, and the next start said it used the one generated then.
  if (operatorKey.generated) printOperatorKey(operatorKey.generated)
  const { buildApp, serverOptions } = await appModule!
  took('operatorKey')
  const cpuBefore = process.cpuUsage()
  const app = await buildApp({
    config, db: database.db, clock, operatorKeyHash: operatorKey.hash, operatorKeyStored: !config.BATON_ADMIN_TOKEN, metrics, wakeups: database.wakeups,
    stopping: () => stopping
  }, serverOptions(config, log))
  await app.ready()
  took('app')
  // CPU, which a busy machine stretches less than the time: building the app is all CPU work.
  const { user, system } = process.cpuUsage(cpuBefore)
  startupMs.appCpu = Math.round((user + system) / 1000)
  close = async (signal) => {
    const schedulerStopped = scheduler && preload(scheduler.stop(config.SHUTDOWN_GRACE_MS))
    // A load balancer sees the 503 only at its next check and sends new connections until then, which
    // a closed listener refused: they are served for SHUTDOWN_DELAY_MS. A terminal's Ctrl-C (SIGINT) or
    // SIGHUP has no load balancer to wait for, and a listener not yet open nothing to serve.
    if (signal === 'SIGTERM' && app.server.listening) await new Promise((resolve) => setTimeout(resolve, delayMs))
    const graceOver = new Promise((resolve) => setTimeout(resolve, config.SHUTDOWN_GRACE_MS).unref())
    // Requests still open when the grace is over are cut off: the server's close waits for each, and a
    // client sending its body slowly may take HTTP_REQUEST_TIMEOUT_MS, past the hard limit (delay + grace + 5 s)
    // where the process exited 1 with the database left open. The listener closes while the scheduler
    // drains, not after: the new requests it took meanwhile held the embedded database's one connection,
    // and the scheduler's drain waited behind them past the hard limit.
    const closing = app.close()
    await schedulerStopped
    await Promise.race([closing, graceOver])
    app.server.closeAllConnections()
    await closing
    // A request cut off there may still wait on a statement (a row another transaction holds, up to
    // DATABASE_STATEMENT_TIMEOUT_MS), and the pool's close waited for it: past the hard limit, exit 1.
    // Its client is gone; the process's end closes its connection and the server rolls back what it
    // had not committed. The embedded database runs one statement at a time, none waiting on a lock.
    await closeCutOff(database)
  }
  const address = await app.listen({ host: config.HOST, port: config.PORT }).catch((error: unknown) => {
    throw listenProblem(error, config.HOST, 'PORT', config.PORT, 'stop what listens there or pick another port') ?? error
  })
  took('listen')
  // After listening, unless a signal came meanwhile: on the embedded database, whose statements run one
  // at a time, the scheduler's first pass (100-240 ms there) would otherwise go before listening.
  if (!stopping) await scheduler?.start()
  app.log.info({ database: database.kind, startupMs, uptimeMs: Math.round(performance.now()) }, `Baton listening on ${address}`)
  if (operatorKey.generated) printTryIt(address)
  else if (!config.BATON_ADMIN_TOKEN) app.log.info('Using the operator key generated on first start; `npm run admin:rotate-key` makes a new one.')
}

/**
 * JSON lines to stdout, bounded while the pipe is not read (src/log-destination.ts); pino-pretty's
 * worker at a terminal. Reading process.stdout first makes a pipe's fd non-blocking, which the bound needs.
 */
function logger(config: Config): Logger {
  const options = logOptions(config, process.stdout.isTTY === true)
  if (options.transport) return pino(options)
  const destination = logDestination()
  const log = pino(options, destination.stream)
  destination.onRecovered((droppedLines) => log.warn({ droppedLines },
    `${droppedLines} log line${droppedLines === 1 ? ' was' : 's were'} dropped while stdout was not read (its pipe full): the log shipper stalled`))
  return log
}

/** How long a stop past its grace waits for the Postgres pool's close (the idle connections' end). */
const CUT_OFF_CLOSE_MS = 100

/**
 * Closes the database after a stop that may have cut off statements still waiting on locks held
 * elsewhere: on Postgres not waited for past CUT_OFF_CLOSE_MS, since the process's end closes their
 * connections and the server rolls back what they had not committed.
 */
async function closeCutOff(database: DatabaseHandle): Promise<void> {
  const databaseClosed = database.close()
  if (database.kind === 'postgres') await Promise.race([databaseClosed, new Promise((resolve) => setTimeout(resolve, CUT_OFF_CLOSE_MS).unref())])
  else await databaseClosed
}

/** An import awaited later: a failure surfaces there, not as an unhandled rejection before it. */
function preload<T>(loading: Promise<T>): Promise<T> {
  loading.catch(() => {})
  return loading
}

/** A worker's probes and metrics on WORKER_HTTP_PORT; the operator key is read when asked, as the API may make it later. */
async function listenAsWorker(config: Config, database: DatabaseHandle, clock: Clock, metrics: BatonMetrics, log: Logger, stopping: () => boolean): Promise<WorkerServer> {
  const { startWorkerServer } = await import('./modules/health/worker-server.js')
  const adminToken = config.BATON_ADMIN_TOKEN
  const operatorKeyHash = adminToken ? () => Promise.resolve(hashKey(adminToken)) : () => findOperatorKeyHash(database.db)
  try {
    return await startWorkerServer({ db: database.db, clock, metrics, log, operatorKeyHash, stopping }, config.HOST, config.WORKER_HTTP_PORT)
  } catch (error) {
    throw listenProblem(error, config.HOST, 'WORKER_HTTP_PORT', config.WORKER_HTTP_PORT, 'give each worker on this machine a port of its own') ?? error
  }
}

// Shown once, on the first start without BATON_ADMIN_TOKEN: only its hash is kept.
function printOperatorKey(key: string): void {
  process.stdout.write(
    [
      '',
      'No BATON_ADMIN_TOKEN was set, so Baton generated an operator key. It is shown only this once:',
      '',
      `  export BATON_ADMIN_TOKEN=${key}`,
      '',
      'Keep it somewhere safe; `npm run admin:rotate-key` replaces it if it is lost.',
      ''
    ].join('\n') + '\n'
  )
}

// Once listening, after the key printed above.
function printTryIt(address: string): void {
  const local = address.replace('0.0.0.0', '127.0.0.1')
  process.stdout.write(['', 'Try it:', `  curl -s -H "Authorization: Bearer $BATON_ADMIN_TOKEN" ${local}/v1/tenants`, ''].join('\n') + '\n')
}

/**
 * The API and the worker run apart only on a Postgres server: the embedded database serves one process,
 * so an API alone on it had no worker beside it (no step started, no webhook called, no mail sent) and
 * a worker alone had no API; each ran on without a word.
 */
function checkRole(config: Config, role: Role): Role {
  if (role === 'all' || config.DATABASE_URL !== undefined) return role
  const missing = role === 'api' ? 'no worker could run beside this API, so no step would start and no webhook or mail go out' : 'no API could run beside this worker'
  throw new ConfigError(`DATABASE_URL: --role=${role} needs a Postgres server; the embedded database serves one process, so ${missing}. Set DATABASE_URL, or run both roles in one process with npm start`)
}

try {
  const config = loadConfig(process.env)
  await main(config, checkRole(config, roleFrom(process.argv.slice(2))))
} catch (caught) {
  // A user, password or database the server does not know fails the first start-up step that needs it.
  const error = asDatabaseUrlProblem(caught)
  if (error instanceof ConfigError || error instanceof DataDirBusyError || error instanceof UnknownMigrationsError
    || error instanceof UnrecordedSchemaError) {
    process.stderr.write(`${error.message}\n`)
    process.exit(1)
  }
  throw error
}
