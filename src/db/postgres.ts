import { Kysely, PostgresDialect, type PostgresPool, type PostgresPoolClient } from './kysely.js'
import { createRequire } from 'node:module'
import pg from 'pg'
import { parse as parseConnectionString } from 'pg-connection-string'
import type { Database } from './database.js'
import { isDatabaseUnavailable, isResourceShortage } from './errors.js'

export interface PostgresOptions {
  poolMax: number
  /** Server-side limit of one statement, and of a transaction left idle; 0: none. */
  statementTimeoutMs: number
  /** How long opening a connection may take before the caller gets an error. */
  connectTimeoutMs: number
  /** Named prepared statements, planned once per connection (see `prepared`). */
  prepareStatements: boolean
  /** How long an idle connection stays open; 0 keeps it (a session whose locks must live on). */
  idleTimeoutMs?: number
  /** Told of errors of idle connections and of the LISTEN connection; they never end the process. */
  onError?: (error: Error) => void
  /** Told when a connection of the pool ends, for whatever reason. */
  onConnectionEnd?: () => void
  /**
   * The work triggers stay silent on these connections (`baton.notify = off`, set when each connects):
   * the process announces its work itself, after commit (src/db/wakeups.ts).
   */
  quietTriggers?: boolean
  /** How often the LISTEN connection checks that the server still answers (listenOnServer); LISTEN_CHECK_MS if unset. */
  listenCheckMs?: number
}

export const DEFAULT_POSTGRES_OPTIONS: PostgresOptions = { poolMax: 10, statementTimeoutMs: 10_000, connectTimeoutMs: 5000, prepareStatements: true }

/**
 * Baton's statements are short, and JIT compiling one costs tens of milliseconds. Postgres compiles a
 * statement whose estimated cost passes `jit_above_cost`, and with finished rows it has not analyzed
 * (autovacuum off, a burst below its threshold) its estimates of a claim of 64 passed it: 57–128 ms
 * where it ran in 6–11 (issue 9, `bench:scheduler --history 1000000`; docs/performance.md). So Baton's
 * connections never JIT compile.
 */
const JIT_OFF = '-c jit=off'

/**
 * How Baton's sessions read and write values, whatever the database or role sets for every session
 * (`ALTER DATABASE … SET`, `ALTER ROLE … SET`, a DBA's taste) or the connection string's options.
 * node-postgres reads a timestamp only in the ISO style: under `DateStyle = 'SQL, DMY'`, `German` or
 * `Postgres` every timestamp came back null, the first write of the API answered 500 and a start
 * took the database's clock for 1970. The intervals' style and the time zone go with it (no statement
 * of Baton's depends on them today; a `::date` or `to_char` of a timestamp would). Baton's statements
 * and their arguments (claims, FOR UPDATE … SKIP LOCKED, idempotency by ON CONFLICT) are made for
 * READ COMMITTED: under a default of SERIALIZABLE, serialization failures answered 409 to 2 of 40
 * concurrent starts of one template and 17 of 20 concurrent writes of one property (18 under
 * REPEATABLE READ), which READ COMMITTED runs one after another, and failed workers' passes. These win
 * over the connection string's options too.
 */
const SESSION_STYLE = ['-c DateStyle=ISO', '-c IntervalStyle=postgres', '-c TimeZone=UTC', '-c default_transaction_isolation=read\\ committed']

/**
 * A connection without a statement timeout (the migrations') says so: node-postgres sends no timeout of 0, and the
 * role's or the database's own (`ALTER ROLE … SET statement_timeout`, a DBA's safety net) cancelled a migration that
 * took longer, which the start then tried again, and had cancelled again, for ever.
 */
const NO_TIMEOUTS = ['-c statement_timeout=0', '-c idle_in_transaction_session_timeout=0']

/**
 * How soon the server finds a connection lost without a word (a network partition, a firewall or NAT
 * that forgot it, a worker's host gone): its TCP keepalive asks after 60 s of silence, then every
 * 10 s, and gives up after 6 unanswered, about two minutes; an answer it sent that is not acknowledged
 * for two minutes (keepalives wait while one is outstanding) ends the connection too. The server's
 * defaults are the system's, two hours and more (some 15 minutes of retransmissions for an answer),
 * all the while keeping the lost session's backend, its connection slot and its advisory locks (a
 * worker's per-host slots). Over TCP only; the connection string's own options win.
 */
const SERVER_KEEPALIVES = ['-c tcp_keepalives_idle=60', '-c tcp_keepalives_interval=10', '-c tcp_keepalives_count=6', '-c tcp_user_timeout=120000']

/**
 * A session of Baton's may sit idle for long and must live: the worker's host-slot session holds its per-host
 * slots as advisory locks while the calls run, and the LISTEN connection waits for notifications. A database's
 * or role's `idle_session_timeout` (a DBA's safety net against leaked connections) ended them, and with the
 * slot session the limit of calls per host until the worker noticed. Baton's pool ends its own idle
 * connections (`idleTimeoutMillis`); the connection string's own options win.
 */
const SESSION_LIVES = '-c idle_session_timeout=0'

/**
 * A connection with a statement timeout waits for a lock as long as that allows: a role's or the database's
 * shorter `lock_timeout` made ordinary waits for a row (two writes of one record, starts of one template at
 * once) fail with 409s, 16 of 40 concurrent starts and 17 of 20 writes of one property at 20 ms. A migration's
 * connection keeps the operator's, which bounds how long its locks may queue the API behind them; the
 * connection string's own options win.
 */
const NO_LOCK_TIMEOUT = '-c lock_timeout=0'

// A server that stops answering (a network partition, a frozen host) never cancels a statement
// itself: the client gives up this much after the server's own statement timeout would have.
const CLIENT_TIMEOUT_MARGIN_MS = 2000

function poolConfig(url: string, options: PostgresOptions): pg.PoolConfig {
  const limits = options.statementTimeoutMs > 0
    ? {
        statement_timeout: options.statementTimeoutMs,
        idle_in_transaction_session_timeout: options.statementTimeoutMs,
        query_timeout: options.statementTimeoutMs + CLIENT_TIMEOUT_MARGIN_MS
      }
    : {}
  return {
    max: options.poolMax,
    connectionTimeoutMillis: options.connectTimeoutMs,
    idleTimeoutMillis: options.idleTimeoutMs ?? 10_000,
    keepAlive: true,
    ...limits,
    ...connectionOf(url, [JIT_OFF, ...SESSION_STYLE, ...(options.quietTriggers ? ['-c baton.notify=off'] : []), ...(options.statementTimeoutMs > 0 ? [] : NO_TIMEOUTS)],
      [...SERVER_KEEPALIVES, SESSION_LIVES, ...(options.statementTimeoutMs > 0 ? [NO_LOCK_TIMEOUT] : [])])
  }
}

/**
 * Where and how to connect, with the server options Baton's connections start with: `defaults`, then
 * `options` given in the connection string (`?options=-c%20search_path%3Dcrm`), then Baton's own
 * (`ours`); the later win where they set the same parameter. node-postgres lets the string's
 * `options` replace the pool's, which dropped `jit=off` and a quiet connection's `baton.notify=off`
 * whenever DATABASE_URL carried options of its own. Such a string is read once by node-postgres's own parser (pg-connection-string), and
 * everything in it but `options` goes over the pool's settings as node-postgres would lay it; any
 * other string is left to node-postgres as it is.
 */
export function connectionOf(url: string, ours: string[], defaults: string[] = []): pg.ClientConfig {
  let fromString: ReturnType<typeof parseConnectionString> | undefined
  try {
    fromString = parseConnectionString(url)
  } catch {
    fromString = undefined // node-postgres reports it when it connects
  }
  if (typeof fromString?.options !== 'string') return { connectionString: url, options: [...defaults, ...ours].join(' ') }
  const { options: theirs, ...rest } = fromString
  return { ...(rest as pg.ClientConfig), options: [...defaults, withoutTrailingEscape(theirs), ...ours].filter((o) => o.trim() !== '').join(' ') }
}

/** Postgres reads a backslash in `options` as escaping the next character: one at the very end would swallow the space before Baton's. */
function withoutTrailingEscape(options: string): string {
  const trailing = /\\+$/.exec(options)?.[0].length ?? 0
  return trailing % 2 === 1 ? options.slice(0, -1) : options
}

/**
 * A pg pool that a lost database cannot crash. node-postgres takes the pool's error listener off a
 * client while it is checked out, so a connection that drops mid-query would emit an unhandled
 * 'error' and end the process: every client gets a listener of its own for its whole life. A client
 * whose query failed because the connection broke or timed out is destroyed on release, so a
 * connection stuck behind an unanswered query is never handed out again.
 *
 * A statement the server left unanswered past the client's timeout (a network partition, a firewall
 * that forgot the connections) says that the connections idle meanwhile may be lost the same way,
 * without a word: each was handed out again and held its request for the timeout (statement timeout
 * plus 2 s) before a 503, one request after another, after the network was back (4 in a row of a pool
 * of 4 in a probe). So a connection not heard from since is replaced when it is taken from the pool.
 */
export function createPool(url: string, options: PostgresOptions): PostgresPool {
  const onError = options.onError ?? (() => {})
  const pool = new pg.Pool(poolConfig(url, options))
  /** Statements left unanswered so far; `heard` keeps this count as of each connection's last answer. */
  let unanswered = 0
  const heard = new WeakMap<pg.PoolClient, number>()
  pool.on('error', onError)
  pool.on('connect', (client) => {
    heard.set(client, unanswered)
    client.on('error', onError)
    if (options.onConnectionEnd) client.on('end', options.onConnectionEnd)
  })
  const shared: PostgresPool & PoolWithState = {
    state: () => ({ max: options.poolMax, total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
    async connect(): Promise<PostgresPoolClient> {
      let client = await pool.connect()
      while ((heard.get(client) ?? unanswered) < unanswered) {
        client.release(true)
        client = await pool.connect()
      }
      let broken = false
      /** Kysely's BEGIN, not sent yet: it goes out with the transaction's first statement. */
      let beginning = false
      /** Between Kysely's BEGIN and its COMMIT or ROLLBACK. */
      let inTransaction = false
      /** The transaction's COMMIT went out with a statement marked THEN_COMMIT: Kysely's own sends nothing. */
      let ended = false
      const query = async (text: string, values: readonly unknown[]): Promise<unknown> => {
        if (text === TOGETHER) return await together(values as readonly StatementText[])
        if (text === 'begin') {
          beginning = inTransaction = true
          ended = false
          return nothingSent()
        }
        if (text === 'commit' || text === 'rollback') {
          const unsent = beginning || ended
          beginning = inTransaction = ended = false
          // A transaction that ran nothing has nothing to end, nor one whose COMMIT went out already.
          if (unsent) return nothingSent()
          return await run(client.query(text))
        }
        if (ended) throw new Error(`A statement after the one that ended its transaction (${THEN_COMMIT}) would run outside it: ${text.slice(0, 80)}`)
        const config = options.prepareStatements ? prepared(client, text, values) : { text, values: values as unknown[] }
        const begin = beginning
        beginning = false
        const commit = inTransaction && text.includes(THEN_COMMIT)
        const carried = (begin || commit) && canPipeline(client, config)
        if (begin && !carried) await run(client.query('begin'))
        const result = carried ? (await run(pipelined(client, config, { begin, commit })))[0]! : await run(client.query(config))
        if (commit && !carried) await run(client.query('commit'))
        // Kysely runs a transaction's statements one at a time, so none was sent alongside this one.
        ended = commit
        return result
      }
      /**
       * Statements of a transaction sent together (TOGETHER): in one round trip once each is prepared
       * on this connection (or runs unnamed); before that, one at a time, which prepares them. Only
       * the last may end the transaction (THEN_COMMIT).
       */
      const together = async (statements: readonly StatementText[]) => {
        if (!inTransaction) throw new Error('Statements sent together belong to a transaction: outside one each would commit on its own')
        if (ended) throw new Error(`Statements after the one that ended their transaction (${THEN_COMMIT}) would run outside it`)
        if (statements.slice(0, -1).some(({ text }) => text.includes(THEN_COMMIT))) throw new Error(`Only the last of the statements sent together may end their transaction (${THEN_COMMIT})`)
        const configs = statements.map(({ text, values }) => (options.prepareStatements ? prepared(client, text, values) : { text, values: [...values] }))
        const [first, ...later] = configs
        if (!first || !configs.every((config) => canPipeline(client, config))) {
          const rows: unknown[][] = []
          for (const { text, values } of statements) rows.push((await query(text, values) as pg.QueryResult).rows)
          return { command: null, rowCount: null, rows }
        }
        // The later statements' values are converted before anything is sent, or BEGIN marked as sent:
        // one that cannot be fails the call with nothing on the wire.
        const converted = later.map((config) => ({ ...config, values: (config.values ?? []).map((value) => prepareValue(value)) }))
        const begin = beginning
        beginning = false
        const commit = statements[statements.length - 1]!.text.includes(THEN_COMMIT)
        const results = await run(pipelined(client, first, { begin, commit, later: converted }))
        ended = commit
        return { command: null, rowCount: null, rows: results.map((result) => result.rows) }
      }
      const run = async <T>(sent: Promise<T>): Promise<T> => {
        try {
          const result = await sent
          heard.set(client, unanswered)
          return result
        } catch (error) {
          // A prepared plan a migration made stale fails once; the connection is then replaced. A server short of
          // disk or memory refused the statement on a sound connection: replacing it would only add a backend's start.
          if ((isDatabaseUnavailable(error) && !isResourceShortage(error)) || isStalePlan(error)) broken = true
          if (isUnanswered(error)) unanswered += 1
          else if (!broken) heard.set(client, unanswered)
          throw error
        }
      }
      return {
        query,
        release: (destroy?: boolean) => {
          beginning = inTransaction = ended = false
          // A connection still inside a transaction (one whose end failed on the way) is not reused.
          const status = client.getTransactionStatus?.()
          client.release(destroy || broken || status === 'T' || status === 'E')
        }
      } as unknown as PostgresPoolClient
    },
    end: () => pool.end()
  }
  return shared
}

/** How many connections a pool has and holds: `waiting` counts the callers queued for one. */
export interface PoolState {
  max: number
  total: number
  idle: number
  waiting: number
}

interface PoolWithState {
  state(): PoolState
}

/** The pools of the Kysely instances kyselyOn made, for poolState. */
const poolsOf = new WeakMap<object, PoolWithState>()

/**
 * The connections of the pool under `db` as they are now; undefined for a database without such a pool
 * (the embedded one). A pool whose every connection is taken and that has callers queued is busy:
 * its statements wait, for a lock held elsewhere or for a slow server (/health/ready says which).
 */
export function poolState(db: object): PoolState | undefined {
  return poolsOf.get(db)?.state()
}

/** node-postgres's own timeout of a statement the server did not answer (`query_timeout`). */
function isUnanswered(error: unknown): boolean {
  return error instanceof Error && /^Query read timeout/.test(error.message)
}

/** The answer to a BEGIN, COMMIT or ROLLBACK that was not sent (see `pipelined`). */
const nothingSent = () => ({ command: null, rowCount: null, rows: [] })

/**
 * Marks the statement that ends its transaction: it goes out with the COMMIT in one round trip
 * (`pipelined`), and Kysely's COMMIT then sends nothing. The caller promises that nothing runs in the
 * transaction after it: a later statement throws, and a ROLLBACK can no longer undo it. Outside a
 * transaction the mark does nothing.
 */
export const THEN_COMMIT = '/* then commit */'

/** What `pipelined` needs of pg's Query and Connection beyond their typings. */
interface QueryInternals {
  submit(connection: ConnectionInternals): Error | null | undefined
  handleCommandComplete(message: unknown, connection: ConnectionInternals): void
}
interface ConnectionInternals {
  stream: { cork(): void; uncork(): void }
  parse(query: { text: string; name: string; types: unknown[] }, more: boolean): void
  bind(config: object, more: boolean): void
  describe(message: { type: 'P'; name: string }): void
  execute(config: object, more?: boolean): void
  sync(): void
}
type ClientInternals = { connection: { parsedStatements: Record<string, string> } }

/**
 * Whether a statement can carry its transaction's BEGIN or COMMIT (`pipelined`): one with parameters,
 * which pg sends with the extended protocol anyway (a text without them may hold several statements,
 * which Parse refuses), and unnamed or already prepared with this text on this connection. pg takes
 * any ParseComplete for a named statement's, BEGIN's too, so a new name whose own Parse failed would
 * be taken for prepared. These are also the checks pg's Query makes before it sends anything: one
 * that failed after BEGIN went out would leave BEGIN on the wire without its Sync.
 */
function canPipeline(client: pg.PoolClient, config: pg.QueryConfig): boolean {
  if (typeof config.text !== 'string' || !Array.isArray(config.values) || config.values.length === 0) return false
  return !config.name || (client as unknown as ClientInternals).connection.parsedStatements[config.name] === config.text
}

/** Parse, Bind and Execute of a statement without parameters, ahead of a Sync that follows. */
function sendPlain(connection: ConnectionInternals, text: string): void {
  connection.parse({ text, name: '', types: [] }, true)
  connection.bind({}, true)
  connection.execute({}, true)
}

/**
 * The text that asks the pool's connection to run statements together (see `runTogether` in
 * src/db/statement.ts); the statements come as its values.
 */
export const TOGETHER = '/* statements together */'

/** A statement's text and its values. */
export interface StatementText {
  text: string
  values: readonly unknown[]
}

/** pg's own conversion of a value for the wire (a Date, an array, an object as JSON). */
const { prepareValue } = createRequire(import.meta.url)('pg/lib/utils.js') as { prepareValue: (value: unknown) => unknown }

/**
 * A statement with its transaction's BEGIN ahead of it, its COMMIT after it, statements that follow
 * it (`later`, each already prepared on this connection or unnamed), or all of these, in one round
 * trip: their Parse, Bind and Execute go out around the statement's own messages, before its one
 * Sync. The server runs them in order, each after the one before it has finished (in READ COMMITTED,
 * with a snapshot taken after it); the query passes over BEGIN's and COMMIT's completions and answers
 * with one result per statement when there are `later` ones. Should BEGIN or a statement fail, the
 * server skips the rest up to the Sync and the query fails with that error (the transaction, if
 * begun, is then rolled back as ever); should COMMIT fail, with COMMIT's. The rest goes only after the
 * statement's Execute: a statement whose values pg could not bind sends none, and nothing after it
 * either. The later statements come with their values converted (`together`). pg's read timeout
 * covers the round trip, all of its statements. Measured with `scripts/bench/api-ab.ts`.
 */
function pipelined(client: pg.PoolClient, config: pg.QueryConfig, around: { begin: boolean; commit: boolean; later?: pg.QueryConfig[] }): Promise<pg.QueryResult[]> {
  return new Promise((resolve, reject) => {
    const later = around.later ?? []
    const query = new pg.Query(config, (error: Error | undefined, result: unknown) => {
      if (error) reject(error)
      else resolve(later.length > 0 ? result as pg.QueryResult[] : [result as pg.QueryResult])
    })
    const internals = query as unknown as QueryInternals
    const submit = internals.submit.bind(query)
    internals.submit = (connection) => {
      const { execute, sync } = connection
      let executed = false
      connection.stream.cork()
      try {
        if (around.begin) sendPlain(connection, 'begin')
        if (around.commit || later.length > 0) {
          connection.execute = (...args) => {
            executed = true
            execute.apply(connection, args)
          }
          connection.sync = () => {
            if (executed) {
              for (const statement of later) sendBound(connection, statement)
              if (around.commit) sendPlain(connection, 'commit')
            }
            sync.call(connection)
          }
        }
        return submit(connection)
      } finally {
        connection.execute = execute
        connection.sync = sync
        connection.stream.uncork()
      }
    }
    // The statement's own completion is the one after BEGIN's, if BEGIN went ahead; the later ones
    // follow it; COMMIT's comes last.
    const own = around.begin ? 2 : 1
    let completions = 0
    const complete = internals.handleCommandComplete.bind(query)
    internals.handleCommandComplete = (message, connection) => {
      completions += 1
      if (completions >= own && completions <= own + later.length) complete(message, connection)
    }
    void client.query(query)
  })
}

/**
 * Parse (unless prepared under its name), Bind, Describe and Execute of a statement whose values are
 * converted already (strings, Buffers or null: see `together`), ahead of a Sync that follows.
 */
function sendBound(connection: ConnectionInternals, statement: pg.QueryConfig): void {
  if (!statement.name) connection.parse({ text: statement.text, name: '', types: [] }, true)
  connection.bind({ statement: statement.name ?? '', values: statement.values ?? [] }, true)
  connection.describe({ type: 'P', name: '' })
  connection.execute({}, true)
}

/**
 * A prepared plan a migration made stale, or a prepared statement the server no longer has (pg closes
 * one whose parameters it could not convert, and still takes it for prepared): the connection goes.
 */
function isStalePlan(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code
  return (code === '0A000' && /cached plan/.test((error as Error).message)) || code === '26000'
}

/**
 * A statement whose text carries this comment is planned on every run with its values, never kept
 * as a generic plan: a kept plan is made for arrays of unknown length (`= any($1)`), and on a table
 * without statistics it probes by tenant alone and filters the tenant's rows (see byKeys).
 */
export const CUSTOM_PLAN = '/* custom plan */'

/** Statements a connection keeps prepared; beyond this, new shapes run unprepared. */
const PREPARED_PER_CONNECTION = 300
/**
 * Characters of SQL a connection keeps prepared in all, and the longest text it prepares. Postgres
 * keeps a prepared statement's parse for as long as the connection lives: an insert of 1,000 rows of
 * twenty values (a copy's of a template of 1,000 steps) took 3.5 MB of the server's memory, and copies
 * of templates of as many step counts left one statement each, up to 300 on each connection. The
 * statements of the API and the worker are up to 5,000 characters, some 50,000 in all.
 */
const PREPARED_CHARS_PER_CONNECTION = 1024 * 1024
const PREPARED_TEXT_MAX = 16 * 1024
const preparedNames = new WeakMap<pg.PoolClient, { names: Map<string, string>; chars: number }>()

/**
 * A statement with parameters runs as a named prepared statement on its connection, so Postgres
 * parses and plans each shape once per connection instead of on every call (transaction control and
 * statements without parameters stay unnamed). Measured with `npm run bench:api` on a busy 2-core
 * machine: Postgres CPU per start 6.2 -> 3.5 ms, per read 0.8 -> 0.2 ms; reads 680 -> 1,740 req/s.
 */
function prepared(client: pg.PoolClient, text: string, values: readonly unknown[]): pg.QueryConfig {
  const config = { text, values: values as unknown[] }
  if (values.length === 0 || text.length > PREPARED_TEXT_MAX || text.includes(CUSTOM_PLAN)) return config
  let kept = preparedNames.get(client)
  if (!kept) preparedNames.set(client, (kept = { names: new Map(), chars: 0 }))
  let name = kept.names.get(text)
  if (!name && kept.names.size < PREPARED_PER_CONNECTION && kept.chars + text.length <= PREPARED_CHARS_PER_CONNECTION) {
    kept.names.set(text, (name = `baton_${kept.names.size}`))
    kept.chars += text.length
  }
  return name ? { ...config, name } : config
}

export function kyselyOn(pool: PostgresPool): Kysely<Database> {
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
  if ('state' in pool) poolsOf.set(db, pool as PostgresPool & PoolWithState)
  return db
}

/** How often the LISTEN connection is asked a cheap question, by default (`listenCheckMs`). */
export const LISTEN_CHECK_MS = 5000

/** How long the LISTEN connection's close waits for the server before its socket is dropped. */
const LISTEN_END_WAIT_MS = 500

/**
 * A dedicated connection for LISTEN. While the database is away it tries again every second and,
 * once connected again, calls `onNotify` once without a payload, since notifications sent meanwhile
 * are lost. It never throws: a database that is down at start is waited for the same way.
 *
 * A connection that stops passing anything (a network partition, a firewall or NAT that forgot it)
 * looks alive to an idle listener: no error, no close, and TCP's keepalive speaks first after two
 * hours. Notifications then never came, and new work waited for the worker's poll interval (8.6 s
 * of a 10 s poll in a probe, for good). So every `listenCheckMs` it runs `select 1`, and one not
 * answered within `connectTimeoutMs` or `listenCheckMs`, the longer (or failed), drops the connection,
 * which is made again. Its close waits LISTEN_END_WAIT_MS for the server before dropping the socket:
 * it waited for an answer that never came, and a worker's stop with it.
 */
export async function listenOnServer(
  url: string, options: PostgresOptions, channel: string, onNotify: (payload?: string) => void
): Promise<() => Promise<void>> {
  const onError = options.onError ?? (() => {})
  let client: pg.Client | undefined
  let stopped = false
  let retry: NodeJS.Timeout | undefined
  const checkEveryMs = options.listenCheckMs ?? LISTEN_CHECK_MS
  // The LISTEN statement's and each check's wait, no shorter than the time between checks: an event loop
  // busy for longer than a short connect timeout (100 ms at the least) failed a check the server had
  // answered, and each such failure cost a reconnect and a whole pass of chores.
  const answerTimeout = Math.max(options.connectTimeoutMs, checkEveryMs)
  const connect = async (): Promise<void> => {
    const next = new pg.Client({ ...connectionOf(url, [], [...SERVER_KEEPALIVES, SESSION_LIVES]), connectionTimeoutMillis: options.connectTimeoutMs, keepAlive: true })
    next.on('notification', (message) => onNotify(message.payload))
    // Only the live client's loss starts a reconnect; a failed attempt is retried by its caller.
    next.on('error', (error) => {
      onError(error)
      if (client === next) reconnect()
    })
    next.on('end', () => {
      if (client === next) reconnect()
    })
    try {
      await next.connect()
      await next.query({ text: `listen "${channel.replace(/"/g, '""')}"`, query_timeout: answerTimeout } as pg.QueryConfig)
    } catch (error) {
      drop(next)
      throw error
    }
    if (stopped) drop(next)
    else client = next
  }
  const attempt = (): Promise<void> => connect().catch((error: Error) => {
    onError(error)
    reconnect()
  })
  const reconnect = () => {
    if (stopped || retry) return
    client = undefined
    retry = setTimeout(() => {
      retry = undefined
      void attempt().then(() => {
        if (client) onNotify()
      })
    }, 1000)
  }
  let checking = false
  const check = setInterval(() => {
    const live = client
    if (!live || checking) return
    checking = true
    live.query({ text: 'select 1', query_timeout: answerTimeout } as pg.QueryConfig).catch((error: Error) => {
      if (client !== live) return
      onError(error)
      drop(live)
      reconnect()
    }).finally(() => { checking = false })
  }, checkEveryMs)
  check.unref()
  await attempt()
  return async () => {
    stopped = true
    clearTimeout(retry)
    clearInterval(check)
    const last = client
    client = undefined
    if (!last) return
    const dropping = setTimeout(() => drop(last), LISTEN_END_WAIT_MS)
    await last.end().catch(() => {})
    clearTimeout(dropping)
  }
}

/** Ends a client at once, its socket destroyed: a server that does not answer cannot hold it. */
function drop(client: pg.Client): void {
  client.end().catch(() => {})
  ;(client as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy()
}
