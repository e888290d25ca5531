/** What pino never writes: keys, secrets, claims and signatures, wherever they appear in a log line. */
export const REDACTED_PATHS = [
  'req.headers.authorization',
  'headers.authorization',
  '*.secret',
  '*.target.secret',
  '*.apiClaim',
  '*.signature',
  '*.key'
]

/**
 * Baton's keys and claims wherever they stand (their `_` percent-encoded too, as a client escaping a whole
 * value sends it), and the values of query parameters named like a credential.
 */
const TOKEN = /\b(bop|btk|bcl)(?:_|%5[Ff])(?:[A-Za-z0-9_.-]|%[0-9A-Fa-f]{2})+/g
const PARAMETER = /([?&][^=&#]*=)([^&#]*)/g
const CREDENTIAL_NAME = /claim|key|token|secret|signature|password|auth/i

/** A request URL as it may be logged: the keys, claims and credentials in it replaced by [redacted]. */
export function redactUrl(url: string): string {
  return url.replace(TOKEN, '$1_[redacted]')
    .replace(PARAMETER, (parameter: string, name: string) => (CREDENTIAL_NAME.test(name) ? `${name}[redacted]` : parameter))
}
