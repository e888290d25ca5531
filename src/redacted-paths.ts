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
