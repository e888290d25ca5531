import { machineShortage, type MachineShortage } from '../lib/machine-shortage.js'
import { tlsRefusal } from '../lib/tls-refusals.js'

// Errors that say the database is away or too slow, not that the request was wrong: a dropped
// connection, a server restarting or failing over, a refused connection, a statement timeout, a
// server short of disk space or memory.
// They answer 503 with Retry-After, make /health/ready fail, and make the scheduler back off.

/** SQLSTATE classes and codes of a database that cannot serve right now. */
const UNAVAILABLE_CODES = new Set([
  '57P01', // admin_shutdown: the server is stopping or restarting
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now: the server is starting up or in recovery
  '57P05', // idle_session_timeout
  '57014', // query_canceled: the statement timeout
  '25P03', // idle_in_transaction_session_timeout
  '53300', // too_many_connections
  '53400', // configuration_limit_exceeded: a statement past one of the server's limits, temp_file_limit above all
  // The server ran short of what it needs, not the request: the same statement succeeds once space or memory
  // is back. A full disk fails only the writes that need a new page (in a probe, nearly every start, claim and
  // outcome) while reads go on, and /health/ready, whose ping writes nothing, with them; as a 500 and an
  // outcome given up at once, each call made meanwhile was left to its lease to be made again.
  '53100', // disk_full
  '53200', // out_of_memory (out of shared memory too: max_locks_per_transaction)
  '53000', // insufficient_resources
  // read_only_sql_transaction: Baton never opens a read-only transaction itself, so the server takes no
  // writes now (a standby a failover left DATABASE_URL pointing at, default_transaction_read_only set)
  '25006'
])

/** The server's disk or memory ran short, or a statement passed one of its limits (SQLSTATE 53000, 53100, 53200, 53400): the connection itself is sound. */
const SHORTAGE_CODES = new Set(['53000', '53100', '53200', '53400'])

/** A collision with a concurrent transaction: the same work succeeds when tried again. */
const CONFLICT_CODES = new Set(['40001', '40P01', '55P03'])

/** Socket errors of a connection that could not be made or broke. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN'
])

/**
 * This machine, not the database, was short of what a new connection needs (src/lib/machine-shortage.ts):
 * an outage to wait out like the others. Before, a worker past its limit logged each pass's connect error
 * as a failure of its own ("scheduler pass failed") and left the calls whose outcome it could not write to
 * their leases (each then logged as an aborted attempt, counted), and an API request answered 500.
 */
const LOCAL_SHORTAGE_CODES = new Map<MachineShortage, string>([
  ['EMFILE', 'this process reached its open-files limit (ulimit -n): no database connection can be opened'],
  ['ENFILE', 'this machine reached its open-files limit (fs.file-max): no database connection can be opened'],
  ['ENOBUFS', 'this machine is short of kernel buffers: no database connection can be opened'],
  ['ENOMEM', 'this machine is short of kernel memory: no database connection can be opened']
])

/** node-postgres's pool gave up waiting for one of its connections to come free, or a new one to open. */
const POOL_WAIT = /^timeout exceeded when trying to connect/

/** Messages node-postgres and its pool give such failures, which carry no code. */
const UNAVAILABLE_MESSAGES = [
  /^Connection terminated/,
  /^Query read timeout/,
  POOL_WAIT,
  /^Connection terminated due to connection timeout/,
  /is not queryable/,
  /^Client was closed/,
  /^Cannot use a pool after calling end/,
  /^The database connection was lost/
]

export function isDatabaseUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false
  const code = (error as { code?: unknown }).code
  // A prepared statement whose plan a migration made stale: its connection is replaced, a retry works.
  if (code === '0A000' && /cached plan/.test(error.message)) return true
  // A bind message the server refused (more values than the protocol carries) fails again however often it is
  // sent; a pooler's own 08P01 (PgBouncer: no server connection) is an outage like any other 08.
  if (code === '08P01' && /^bind message /.test(error.message)) return false
  if (typeof code === 'string' && (UNAVAILABLE_CODES.has(code) || code.startsWith('08') || NETWORK_CODES.has(code))) return true
  if (localShortage(error) !== undefined) return true
  // A new connection refused its user, password or database while the process runs (a password changed,
  // a role renamed, CONNECT revoked): the start refuses them as settings to correct (whenDatabaseAnswers),
  // a running process waits for them to work again, as for any outage.
  if (refusedSettings(error)) return true
  // So does a TLS connection that cannot be made (a certificate renewed by an authority not trusted, a
  // server restarted without TLS): refused at the start (databaseTlsProblem), waited for while running.
  if (databaseTlsProblem(error) !== undefined) return true
  if (error instanceof AggregateError) return error.errors.some(isDatabaseUnavailable)
  return UNAVAILABLE_MESSAGES.some((pattern) => pattern.test(error.message))
}

/**
 * The server refused the user, password or database DATABASE_URL names (SQLSTATE 28000, 28P01, 3D000,
 * or 42501 for a database the user may not connect to): at the start, a setting to correct, which no
 * wait makes work. The 42501 is told by the server's routine that checks CONNECT, not by its message:
 * CREATE withheld on the database reads the same in English ("permission denied for database x"),
 * and the message is in the server's language.
 */
export function refusesConnectionSettings(error: unknown): error is Error {
  return refusedSettings(error)
}

/**
 * The server withheld a privilege on a table or schema (SQLSTATE 42501 from its ACL check: a read-only
 * user, or one that may not create in Postgres 15's public schema): the user to change, which no wait
 * makes work. Told by the routine, as the CONNECT refusal above, not by the message.
 */
export function lacksPrivilege(error: unknown): error is Error {
  return error instanceof Error && (error as { code?: unknown }).code === '42501' && (error as { routine?: unknown }).routine === 'aclcheck_error'
}

function refusedSettings(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code
  if (!(error instanceof Error)) return false
  return code === '28000' || code === '28P01' || code === '3D000' || (code === '42501' && (error as { routine?: unknown }).routine === 'CheckMyDatabase')
}

/**
 * Why node-postgres could not open the TLS connection DATABASE_URL asks for (`sslmode`, `ssl=true`),
 * with what to change, in words; undefined for any other error. No wait makes such a connection work,
 * and node-postgres's own words (a bare "self-signed certificate", "The server does not support SSL
 * connections") named neither DATABASE_URL nor what it checks.
 */
export function databaseTlsProblem(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined
  // node-postgres's words for a server's answer to its request for TLS.
  if (error.message === 'The server does not support SSL connections') {
    return 'the database server does not take TLS connections, and DATABASE_URL asks for TLS (sslmode, or ssl=true): turn TLS on at the server, '
      + 'or connect without it (sslmode=disable) only over a network you trust'
  }
  if (error.message === 'There was an error establishing an SSL connection') {
    return 'the database server answered the request for TLS with neither yes nor no: DATABASE_URL may name a server that is not Postgres'
  }
  const refusal = tlsRefusal(error)
  const refused = 'the database server\'s TLS certificate was refused'
  const trust = 'give its certificate authority with sslrootcert=<file> in DATABASE_URL (or NODE_EXTRA_CA_CERTS), or choose to encrypt without checking it (sslmode=no-verify)'
  switch (refusal?.kind) {
    case undefined: return undefined
    case 'otherName': return `${refused}: it is not for the host DATABASE_URL names (${refusal.said}); connect by a name the certificate holds`
    case 'untrusted':
      return `${refused}: ${refusal.said} (not issued by a certificate authority Baton trusts); node-postgres checks the certificate and its host name `
        + `for sslmode=require, prefer and verify-ca as for verify-full: ${trust}`
    case 'refused': return `${refused}: ${refusal.said}`
    case 'handshake': return `the TLS handshake with the database server failed: ${refusal.said}`
  }
}

/**
 * Whether a TLS connection that could not be made is DATABASE_URL's to correct (a refused certificate,
 * a server that takes no TLS, a port that speaks none), which ends the start; a handshake broken
 * otherwise (a server restarting, a failover's proxy) is waited out as any outage.
 */
export function tlsSettingToCorrect(error: unknown): boolean {
  if (databaseTlsProblem(error) === undefined) return false
  const refusal = tlsRefusal(error as Error)
  return refusal?.kind !== 'handshake' || refusal.said === 'wrong version number'
}

/**
 * What an unavailable database (isDatabaseUnavailable) is doing, as a clause ("the database …") for a
 * log line or a 503's detail: they differ in what the operator has to do, though each is waited out.
 */
export function unavailableReason(error: unknown): string {
  if (error instanceof AggregateError) {
    const inner = error.errors.find(isDatabaseUnavailable)
    if (inner !== undefined) return unavailableReason(inner)
  }
  const code = (error as { code?: unknown } | undefined)?.code
  if (code === '25006') return 'the database takes no writes (read-only)'
  if (refusedSettings(error)) return 'the database refuses the user, password or database name Baton connects with'
  if (databaseTlsProblem(error) !== undefined) return 'the database cannot be reached over TLS as DATABASE_URL asks'
  if (code === '53300') return 'the database has no connection to spare'
  if (code === '53400') return 'the database refused a statement past one of its limits (temp_file_limit, say)'
  if (code === '53100') return 'the database has no disk space left for writes'
  if (code === '53200') return 'the database is out of memory'
  if (code === '53000') return 'the database is short of resources'
  if (code === '57014') return 'the database did not answer in time'
  return localShortage(error) ?? 'the database did not answer'
}

/** Why a connection could not be opened, when this machine ran short (LOCAL_SHORTAGE_CODES); undefined otherwise. */
function localShortage(error: unknown): string | undefined {
  const shortage = machineShortage(error)
  return shortage && LOCAL_SHORTAGE_CODES.get(shortage)
}

/** The database is away, or the transaction collided with another: worth trying again shortly. */
export function isTransientDatabaseError(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code
  return isDatabaseUnavailable(error) || (typeof code === 'string' && CONFLICT_CODES.has(code))
}

/**
 * The server is short of disk space or memory (SQLSTATE 53000, 53100, 53200), or refused a statement past
 * one of its limits (53400, temp_file_limit): an outage to wait out, on a connection that stays sound, so
 * the pool keeps it (a new one for each refused write only adds to the server's load while it is short).
 */
export function isResourceShortage(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code
  return typeof code === 'string' && SHORTAGE_CODES.has(code)
}

/** The statement ran past DATABASE_STATEMENT_TIMEOUT_MS (SQLSTATE 57014): less work at once may fit. */
export function isStatementTimeout(error: unknown): boolean {
  return (error as { code?: unknown } | undefined)?.code === '57014'
}

/** The transaction was chosen to end a deadlock (SQLSTATE 40P01): the other went on, and the same work may follow it. */
export function isDeadlock(error: unknown): boolean {
  return (error as { code?: unknown } | undefined)?.code === '40P01'
}

/** A lock wait that ran past the transaction's lock_timeout (SQLSTATE 55P03): a row held elsewhere. */
export function isLockNotAvailable(error: unknown): boolean {
  return (error as { code?: unknown } | undefined)?.code === '55P03'
}

/** The pool's wait for a connection ran past DATABASE_CONNECT_TIMEOUT_MS: every one taken, or none could be opened. */
export function isPoolWait(error: unknown): boolean {
  return error instanceof Error && POOL_WAIT.test(error.message)
}

/** Seconds a client should wait before retrying a request the database could not serve. */
export const UNAVAILABLE_RETRY_AFTER_S = 2

/** What a refusal of each SQLSTATE class means for a change Baton made on its own (the log has the rest). */
const REFUSALS: Record<string, string> = {
  '23503': 'a record it refers to does not exist, or was deleted meanwhile',
  '23505': 'it collided with a change made at the same time',
  '23': 'the database refused its change as breaking a rule of the data',
  '22': 'the database refused a value of its change'
}

/**
 * A database's refusal of a change, said without the database's own message, which names tables,
 * columns and constraints: for a reason a person reads (an activity, a controller's mail). Undefined
 * for anything but an error with a SQLSTATE (node-postgres's and the embedded database's alike).
 */
export function databaseRefusal(error: unknown): string | undefined {
  const { code, severity } = (error ?? {}) as { code?: unknown; severity?: unknown }
  // A socket's error has a code too (EPIPE): only the server's answer carries a severity.
  if (!(error instanceof Error) || typeof severity !== 'string' || typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return undefined
  return `${REFUSALS[code] ?? REFUSALS[code.slice(0, 2)] ?? 'the database refused its change'}, SQLSTATE ${code}`
}
