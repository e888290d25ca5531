import { Kysely, PostgresDialect, type PostgresPool, type PostgresPoolClient } from './kysely.js'
import pg from 'pg'
import type { Database } from './database.js'
import { isDatabaseUnavailable } from './errors.js'

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
}

export const DEFAULT_POSTGRES_OPTIONS: PostgresOptions = { poolMax: 10, statementTimeoutMs: 10_000, connectTimeoutMs: 5000, prepareStatements: true }

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
    connectionString: url,
    max: options.poolMax,
    connectionTimeoutMillis: options.connectTimeoutMs,
    idleTimeoutMillis: options.idleTimeoutMs ?? 10_000,
    keepAlive: true,
    ...(options.quietTriggers ? { options: '-c baton.notify=off' } : {}),
    ...limits
  }
}

/**
 * A pg pool that a lost database cannot crash. node-postgres takes the pool's error listener off a
 * client while it is checked out, so a connection that drops mid-query would emit an unhandled
 * 'error' and end the process: every client gets a listener of its own for its whole life. A client
 * whose query failed because the connection broke or timed out is destroyed on release, so a
 * connection stuck behind an unanswered query is never handed out again.
 */
export function createPool(url: string, options: PostgresOptions): PostgresPool {
  const onError = options.onError ?? (() => {})
  const pool = new pg.Pool(poolConfig(url, options))
  pool.on('error', onError)
  pool.on('connect', (client) => {
    client.on('error', onError)
    if (options.onConnectionEnd) client.on('end', options.onConnectionEnd)
  })
  return {
    async connect(): Promise<PostgresPoolClient> {
      const client = await pool.connect()
      let broken = false
      /** Kysely's BEGIN, not sent yet: it goes out with the transaction's first statement. */
      let beginning = false
      const query = async (text: string, values: readonly unknown[]) => {
        if (text === 'begin') {
          beginning = true
          return nothingSent()
        }
        const config = options.prepareStatements ? prepared(client, text, values) : { text, values: values as unknown[] }
        const begin = beginning
        beginning = false
        // A transaction that ran nothing has nothing to end.
        if (begin && (text === 'commit' || text === 'rollback')) return nothingSent()
        try {
          const carried = begin && canFollowBegin(client, config)
          if (begin && !carried) await client.query('begin')
          return await (carried ? afterBegin(client, config) : client.query(config))
        } catch (error) {
          // A prepared plan a migration made stale fails once; the connection is then replaced.
          if (isDatabaseUnavailable(error) || isStalePlan(error)) broken = true
          throw error
        }
      }
      return {
        query,
        release: (destroy?: boolean) => {
          beginning = false
          client.release(destroy || broken)
        }
      } as unknown as PostgresPoolClient
    },
    end: () => pool.end()
  }
}

/** The answer to a BEGIN, COMMIT or ROLLBACK that was not sent (see `afterBegin`). */
const nothingSent = () => ({ command: null, rowCount: null, rows: [] })

/** What `afterBegin` needs of pg's Query and Connection beyond their typings. */
interface QueryInternals {
  submit(connection: pg.Connection): Error | null | undefined
  handleCommandComplete(message: unknown, connection: pg.Connection): void
}
type ClientInternals = { connection: { parsedStatements: Record<string, string> } }

/**
 * Whether a transaction's first statement can carry its BEGIN (`afterBegin`): one with parameters,
 * which pg sends with the extended protocol anyway (a text without them may hold several statements,
 * which Parse refuses), and unnamed or already prepared with this text on this connection. pg takes
 * any ParseComplete for a named statement's, BEGIN's too, so a new name whose own Parse failed would
 * be taken for prepared. These are also the checks pg's Query makes before it sends anything: one
 * that failed after BEGIN went out would leave BEGIN on the wire without its Sync.
 */
function canFollowBegin(client: pg.PoolClient, config: pg.QueryConfig): boolean {
  if (typeof config.text !== 'string' || !Array.isArray(config.values) || config.values.length === 0) return false
  return !config.name || (client as unknown as ClientInternals).connection.parsedStatements[config.name] === config.text
}

/**
 * BEGIN and a transaction's first statement in one round trip instead of two: Parse, Bind and Execute
 * of BEGIN go out ahead of the statement's own messages, before its one Sync. The server answers in
 * order; the query passes over BEGIN's completion. Should BEGIN fail, the server skips the statement
 * up to the Sync and the query fails with BEGIN's error. Measured with `scripts/bench/api-ab.ts`.
 */
function afterBegin(client: pg.PoolClient, config: pg.QueryConfig): Promise<pg.QueryResult> {
  return new Promise((resolve, reject) => {
    const query = new pg.Query(config, (error: Error | undefined, result: unknown) => (error ? reject(error) : resolve(result as pg.QueryResult)))
    const internals = query as unknown as QueryInternals
    const submit = internals.submit.bind(query)
    internals.submit = (connection) => {
      connection.stream.cork()
      try {
        connection.parse({ text: 'begin', name: '', types: [] }, true)
        connection.bind({}, true)
        connection.execute({}, true)
        return submit(connection)
      } finally {
        connection.stream.uncork()
      }
    }
    let begun = false
    const complete = internals.handleCommandComplete.bind(query)
    internals.handleCommandComplete = (message, connection) => {
      if (begun) complete(message, connection)
      begun = true
    }
    void client.query(query)
  })
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
const preparedNames = new WeakMap<pg.PoolClient, Map<string, string>>()

/**
 * A statement with parameters runs as a named prepared statement on its connection, so Postgres
 * parses and plans each shape once per connection instead of on every call (transaction control and
 * statements without parameters stay unnamed). Measured with `npm run bench:api` on a busy 2-core
 * machine: Postgres CPU per start 6.2 -> 3.5 ms, per read 0.8 -> 0.2 ms; reads 680 -> 1,740 req/s.
 */
function prepared(client: pg.PoolClient, text: string, values: readonly unknown[]): pg.QueryConfig {
  const config = { text, values: values as unknown[] }
  if (values.length === 0 || text.includes(CUSTOM_PLAN)) return config
  let names = preparedNames.get(client)
  if (!names) preparedNames.set(client, (names = new Map()))
  let name = names.get(text)
  if (!name && names.size < PREPARED_PER_CONNECTION) names.set(text, (name = `baton_${names.size}`))
  return name ? { ...config, name } : config
}

export function kyselyOn(pool: PostgresPool): Kysely<Database> {
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
}

/**
 * A dedicated connection for LISTEN. While the database is away it tries again every second and,
 * once connected again, calls `onNotify` once without a payload, since notifications sent meanwhile
 * are lost. It never throws: a database that is down at start is waited for the same way.
 */
export async function listenOnServer(
  url: string, options: PostgresOptions, channel: string, onNotify: (payload?: string) => void
): Promise<() => Promise<void>> {
  const onError = options.onError ?? (() => {})
  let client: pg.Client | undefined
  let stopped = false
  let retry: NodeJS.Timeout | undefined
  const connect = async (): Promise<void> => {
    const next = new pg.Client({ connectionString: url, connectionTimeoutMillis: options.connectTimeoutMs, keepAlive: true })
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
      await next.query(`listen "${channel.replace(/"/g, '""')}"`)
    } catch (error) {
      next.end().catch(() => {})
      throw error
    }
    if (stopped) await next.end().catch(() => {})
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
  await attempt()
  return async () => {
    stopped = true
    clearTimeout(retry)
    const last = client
    client = undefined
    await last?.end().catch(() => {})
  }
}
