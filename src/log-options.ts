import { createRequire } from 'node:module'
import { stdSerializers, type LoggerOptions } from 'pino'
import type { Config } from './config.js'
import { redactEchoed } from './lib/echoed-values.js'
import { REDACTED_PATHS, redactUrl } from './redacted-paths.js'

/** pino-pretty for a person at a terminal: colours, the time of day, no pid or host name on each line. */
export const PRETTY_OPTIONS = { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }

/**
 * One JSON object a line, for log collectors; but a person running Baton at a terminal in development
 * (stdout a TTY, NODE_ENV not production) reads pino-pretty's lines, formatted in a worker thread.
 */
export function logOptions(config: Pick<Config, 'LOG_LEVEL' | 'NODE_ENV'> & Partial<Pick<Config, 'BATON_ADMIN_TOKEN'>>, stdoutIsTTY: boolean): LoggerOptions {
  const pretty = stdoutIsTTY && config.NODE_ENV !== 'production'
  // An operator key of the operator's own choosing need not look like one (bop_…): redacted as written.
  const adminToken = config.BATON_ADMIN_TOKEN
  return {
    level: config.LOG_LEVEL,
    redact: REDACTED_PATHS,
    serializers: { req: adminToken ? (request: LoggedRequest) => requestLine(request, adminToken) : requestLine, err: errorLine },
    // By path: pino would look for the package from the file that creates the logger.
    ...(pretty ? { transport: { target: createRequire(import.meta.url).resolve('pino-pretty'), options: PRETTY_OPTIONS } } : {})
  }
}

/** The fields of a request that its log lines show, as Fastify's own serializer picks them. */
interface LoggedRequest {
  method: string
  url: string
  headers?: Record<string, string | string[] | undefined>
  host?: string
  ip?: string
  socket?: { remotePort?: number }
}

/**
 * Fastify's request serializer, but with the URL's keys and claims redacted: a client that sends its key
 * or apiClaim in the query string (which Baton never reads there) would otherwise have it written in clear.
 */
function requestLine(request: LoggedRequest, adminToken?: string) {
  const url = redactUrl(request.url)
  return {
    method: request.method,
    url: adminToken ? redactToken(url, adminToken) : url,
    version: request.headers?.['accept-version'],
    host: request.host,
    remoteAddress: request.ip,
    remotePort: request.socket?.remotePort
  }
}

/**
 * The URL without the token: as written, as encodeURIComponent writes it, or escaped in another way
 * (percent-encoding in either case, in part). redactEchoed reads a token holding `%` as its escapes
 * mean, so the first two are replaced as written.
 */
function redactToken(url: string, token: string): string {
  return redactEchoed(url.replaceAll(token, '[redacted]').replaceAll(encodeURIComponent(token), '[redacted]'), [token])
}

/**
 * pino's error serializer, but without the row a constraint's violation names: Postgres's detail
 * ("Failing row contains (…)") holds the whole row, a free target's secret among it where secrets are
 * kept unsealed (no BATON_SECRETS_KEY), or people's e-mail addresses. The code, constraint and table stay.
 */
function errorLine(error: Error) {
  const line = stdSerializers.err(error) as ReturnType<typeof stdSerializers.err> & { detail?: unknown; code?: unknown }
  // Known by its SQLSTATE, not its words: a server whose lc_messages is German writes "Fehlgeschlagene Zeile enthält".
  if (typeof line.detail === 'string' && ((typeof line.code === 'string' && ROW_NAMING_CODES.has(line.code)) || line.detail.startsWith('Failing row contains'))) {
    line.detail = 'the failing row [redacted]'
  }
  // A refused TLS certificate (the database's: node's ERR_TLS_CERT_ALTNAME_INVALID carries it) is
  // written as who it is for and who issued it: the whole chain, bytes and all, made a line of 4 KB,
  // once a second while the LISTEN connection tried again.
  const cert = (line as { cert?: unknown }).cert
  if (typeof cert === 'object' && cert !== null && 'raw' in cert) (line as { cert?: unknown }).cert = certificateLine(cert as Record<string, unknown>)
  // pg-pool hangs the connection that broke on its error: the whole pg Client, 4 KB of its socket, its
  // prepared statements' SQL and the backend's cancel key (secretKey), once for every connection lost.
  delete (line as { client?: unknown }).client
  return line
}

function certificateLine({ subject, issuer, subjectaltname, valid_from, valid_to }: Record<string, unknown>) {
  return { subject, issuer, subjectaltname, valid_from, valid_to }
}

/** The violations whose detail names the whole row: not null, check, exclusion (and, in English, any other that says so). */
const ROW_NAMING_CODES = new Set(['23502', '23514', '23P01'])
