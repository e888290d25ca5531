import { Ajv, type ValidateFunction } from 'ajv'
import addressparser from 'nodemailer/lib/addressparser'
import { parse as parseConnectionString } from 'pg-connection-string'
import { Type, type Static } from 'typebox'
import { parseAllowedTargets } from './adapters/address-policy.js'
import { databaseTlsProblem, lacksPrivilege, refusesConnectionSettings } from './db/errors.js'
import { secretsKeyProblem } from './lib/secret-box.js'
import { clearerMessage } from './plugins/validation-messages.js'

const Flag = Type.Boolean({ default: false })

export const ConfigSchema = Type.Object({
  NODE_ENV: Type.Union([Type.Literal('development'), Type.Literal('production'), Type.Literal('test')], { default: 'development' }),
  HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000 }),
  WORKER_HTTP_PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3001 }),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { default: 'info' }),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  DATABASE_POOL_MAX: Type.Integer({ minimum: 1, maximum: 100, default: 10 }),
  DATABASE_STATEMENT_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 600_000, default: 10_000 }),
  DATABASE_CONNECT_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 120_000, default: 5000 }),
  DATABASE_PREPARED_STATEMENTS: Type.Boolean({ default: true }),
  BATON_DATA_DIR: Type.String({ minLength: 1, default: './data' }),
  BATON_ADMIN_TOKEN: Type.Optional(Type.String({ minLength: 24 })),
  BATON_MIGRATE_ON_START: Type.Boolean({ default: true }),
  /** How many reverse proxies in front append to X-Forwarded-For: `true` is one, `false` none (trustProxy, app.ts). */
  BATON_TRUST_PROXY: Type.Integer({ minimum: 0, maximum: 10, default: 0 }),
  BATON_WORKER_ID: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
  SCHEDULER_POLL_INTERVAL_MS: Type.Integer({ minimum: 10, maximum: 600_000, default: 1000 }),
  SCHEDULER_BATCH_SIZE: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  SCHEDULER_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 1000, default: 64 }),
  SCHEDULER_LEASE_MS: Type.Integer({ minimum: 1000, maximum: 3_600_000, default: 60_000 }),
  SHUTDOWN_GRACE_MS: Type.Integer({ minimum: 0, maximum: 600_000, default: 10_000 }),
  /** Unset: 5000 for --role=api, 0 for the other roles (shutdownDelayMs). */
  SHUTDOWN_DELAY_MS: Type.Optional(Type.Integer({ minimum: 0, maximum: 600_000 })),
  BATON_RETENTION_DAYS: Type.Integer({ minimum: 0, maximum: 36_500, default: 90 }),
  BATON_CLAIM_SECRET: Type.Optional(Type.String({ minLength: 32 })),
  API_CLAIM_TTL_MS: Type.Integer({ minimum: 60_000, maximum: 86_400_000, default: 900_000 }),
  WEBHOOK_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 300_000, default: 10_000 }),
  WEBHOOK_MAX_ATTEMPTS: Type.Integer({ minimum: 1, maximum: 50, default: 8 }),
  WEBHOOK_MAX_BODY_BYTES: Type.Integer({ minimum: 1024, maximum: 10_485_760, default: 65_536 }),
  WEBHOOK_ALLOW_PRIVATE_NETWORKS: Flag,
  WEBHOOK_ALLOWED_TARGETS: Type.String({ default: '' }),
  WEBHOOK_PER_HOST_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 1000, default: 8 }),
  SMTP_URL: Type.Optional(Type.String({ pattern: '^smtps?://' })),
  MAIL_FROM: Type.String({ minLength: 3, default: 'Baton <baton@localhost>' }),
  // Hostile input (issue 10): bounds on what one client can make the API do.
  HTTP_REQUEST_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 600_000, default: 30_000 }),
  BATON_SECRETS_KEY: Type.Optional(Type.String()),
  BATON_SECRETS_KEY_PREVIOUS: Type.Optional(Type.String()),
  RATE_LIMIT_MAX: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 1000 }),
  RATE_LIMIT_WINDOW_MS: Type.Integer({ minimum: 1000, maximum: 3_600_000, default: 60_000 }),
  AUTH_FAILURE_LIMIT: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 30 }),
  PRESSURE_MAX_EVENT_LOOP_DELAY_MS: Type.Integer({ minimum: 0, maximum: 60_000, default: 1000 }),
  PRESSURE_MAX_EVENT_LOOP_UTILIZATION: Type.Number({ minimum: 0, maximum: 1, default: 0 })
})

export type Config = Readonly<Static<typeof ConfigSchema>>

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** A number as people write one: digits, a sign, a fraction, an exponent; no 0x, 0b, 0o or Infinity. */
const DECIMAL = /^\s*[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?\s*$/i

/** What a delivery's lease must last beyond WEBHOOK_TIMEOUT_MS: the claim before its call, the outcome's write after. */
const LEASE_BEYOND_TIMEOUT_MS = 1000

/** Compiled on the first read of the settings, then kept. */
let validateSettings: ValidateFunction | undefined

/**
 * Checks and converts the settings with Ajv, which the API loads anyway (typebox/value would add a few
 * hundred modules to every start): numbers from their text, flags from true/false/1/0, defaults filled.
 */
function checkSettings(raw: Record<string, unknown>): { config: Record<string, unknown>; errors: Map<string, string> } {
  validateSettings ??= new Ajv({ coerceTypes: true, useDefaults: true, allErrors: true, strict: false }).compile(ConfigSchema)
  const validate = validateSettings
  const config = { ...raw }
  const notDecimal: string[] = []
  for (const [key, schema] of Object.entries(ConfigSchema.properties) as [string, { type?: unknown }][]) {
    const value = config[key]
    if (schema.type === 'boolean' && typeof value === 'string') config[key] = ({ '1': 'true', '0': 'false' } as Record<string, string>)[value] ?? value.toLowerCase()
    // A count of proxies that was a flag: `true` still means the one proxy in front.
    if (key === 'BATON_TRUST_PROXY' && typeof value === 'string') config[key] = ({ true: '1', false: '0' } as Record<string, string>)[value.trim().toLowerCase()] ?? value
    // JavaScript's Number reads blanks as 0, and so would Ajv: `RATE_LIMIT_MAX= ` turned the limit off. Ajv does
    // not coerce an empty text, so the setting is refused as no number.
    if ((schema.type === 'integer' || schema.type === 'number') && typeof value === 'string') {
      if (value.trim() === '') config[key] = ''
      // Ajv reads a number as JavaScript's Number does, so `PORT=0x10` listened on 16 and `0b1` was 1.
      else if (!DECIMAL.test(value) && !Number.isNaN(Number(value))) notDecimal.push(key)
    }
  }
  const errors = new Map<string, string>()
  for (const key of notDecimal) {
    errors.set(key, 'must be a number written in decimal digits')
    config[key] = ''
  }
  if (!validate(config)) {
    for (const error of validate.errors ?? []) {
      const key = error.instancePath.split('/')[1]
      if (key && !errors.has(key)) errors.set(key, clearerMessage(error).message ?? 'is invalid')
    }
  }
  if (errors.has('BATON_TRUST_PROXY')) errors.set('BATON_TRUST_PROXY', 'must be true, false or how many reverse proxies are in front (0 to 10)')
  return { config, errors }
}

/** Reads settings from an environment map; a wrong value throws naming the variable and what it expects. */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const known = Object.keys(ConfigSchema.properties)
  const raw: Record<string, unknown> = {}
  for (const key of known) {
    const value = env[key]
    if (value !== undefined && value !== '') raw[key] = value
  }
  const { config, errors } = checkSettings(raw)
  const properties = ConfigSchema.properties as Record<string, { anyOf?: { const?: unknown }[] }>
  const problems = [...errors].map(([key, message]) => `${key}: ${expectation(properties[key]!, message)}`)
  // A call goes out only while its lease still covers its whole timeout (deliver.ts): a lease barely
  // longer than the timeout had run past that by the time the claim's statement returned, and every
  // call was put back and claimed again, for ever, none made (SCHEDULER_LEASE_MS=1000, WEBHOOK_TIMEOUT_MS=999).
  if (Number(config.SCHEDULER_LEASE_MS) < Number(config.WEBHOOK_TIMEOUT_MS) + LEASE_BEYOND_TIMEOUT_MS) {
    problems.push(`SCHEDULER_LEASE_MS: must be at least WEBHOOK_TIMEOUT_MS + ${LEASE_BEYOND_TIMEOUT_MS} (${Number(config.WEBHOOK_TIMEOUT_MS) + LEASE_BEYOND_TIMEOUT_MS}): ` +
      'a call goes out only while its lease covers the whole timeout, and a worker needs the rest to claim it and record its outcome')
  }
  const database = databaseUrlProblem(config.DATABASE_URL)
  if (database) problems.push(`DATABASE_URL: ${database}`)
  const smtp = urlProblem(config.SMTP_URL, (url) => {
    if (new URL(url).hostname === '') throw new Error('no host')
  })
  if (smtp) problems.push(`SMTP_URL: ${smtp}; expected e.g. smtp://user:pass@mail.example.com:587`)
  const from = String(config.MAIL_FROM)
  const sender = addressparser(from)
  // A value read with its quotes (`docker run --env-file` keeps them): `"Baton <baton@localhost>"` parses
  // as the address `"Baton <baton"@localhost>`, `'baton@example.com'` as one with quotes around it.
  if (/^(["']).*\1$/s.test(from.trim())) {
    problems.push('MAIL_FROM: remove the quotes around it; a file read without a shell (docker --env-file) keeps them as part of the value')
  } else if (sender.length !== 1 || !/^[^\s"<>(),;:\\@]+@[^\s"'<>(),;:\\@]+$/.test(sender[0]!.address ?? '')) {
    // Without an address nodemailer sends the mail with no From header and an empty envelope sender.
    problems.push('MAIL_FROM: must be one sender address, e.g. Baton <baton@example.com> or baton@example.com')
  }
  const allowList = allowedTargetsProblem(String(config.WEBHOOK_ALLOWED_TARGETS))
  if (allowList) problems.push(`WEBHOOK_ALLOWED_TARGETS: ${allowList}`)
  for (const name of ['BATON_SECRETS_KEY', 'BATON_SECRETS_KEY_PREVIOUS']) {
    const problem = typeof config[name] === 'string' ? secretsKeyProblem(config[name]) : undefined
    if (problem) problems.push(`${name}: ${problem}`)
  }
  // A request sends the key as "Authorization: Bearer <key>", which carries no space (nor a character
  // outside visible ASCII): such a key was taken, and no request could ever present it.
  if (typeof config.BATON_ADMIN_TOKEN === 'string' && !/^[\x21-\x7e]+$/.test(config.BATON_ADMIN_TOKEN)) {
    problems.push('BATON_ADMIN_TOKEN: must be visible ASCII characters without spaces, as it is sent in "Authorization: Bearer <key>"')
  }
  // Alone, the previous key opens what it sealed while every secret written from then on is kept unsealed.
  if (config.BATON_SECRETS_KEY_PREVIOUS !== undefined && config.BATON_SECRETS_KEY === undefined) {
    problems.push('BATON_SECRETS_KEY_PREVIOUS: is set without BATON_SECRETS_KEY, so new secrets would be stored unsealed; set BATON_SECRETS_KEY to the key to seal with')
  }
  if (problems.length > 0) {
    throw new ConfigError(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`)
  }
  return Object.freeze(config as Static<typeof ConfigSchema>)
}

/**
 * Why a URL its pattern let through cannot be read (a port that is not a number, no host), as its
 * library reads it: such a value failed only later, with "Invalid URL" and no variable named.
 */
function urlProblem(value: unknown, read: (url: string) => void): string | undefined {
  if (typeof value !== 'string' || !/^[a-z]+:\/\//.test(value)) return undefined
  try {
    read(value)
    return undefined
  } catch (error) {
    return `is not a URL that can be read (${(error as Error).message})`
  }
}

/**
 * Why DATABASE_URL cannot be read as node-postgres reads it, which reads the files of a TLS connection
 * (`sslrootcert`, `sslcert`, `sslkey`) as it goes: one that cannot be read, or libpq's verify-ca without
 * its authority, read as "not a URL that can be read" with advice on percent-encoding the password.
 */
function databaseUrlProblem(value: unknown): string | undefined {
  if (typeof value !== 'string' || !/^[a-z]+:\/\//.test(value)) return undefined
  try {
    parseConnectionString(value)
    return undefined
  } catch (error) {
    const message = (error as Error).message
    if (typeof (error as NodeJS.ErrnoException).path === 'string') {
      return `a file it names (sslrootcert, sslcert or sslkey) cannot be read (${message}); Baton reads it at start`
    }
    if (/sslmode=verify-ca requires specifying a CA/.test(message)) {
      return 'uselibpqcompat=true&sslmode=verify-ca checks the server\'s certificate against the authority sslrootcert=<file> gives, and none is given; or use sslmode=verify-full'
    }
    return `is not a URL that can be read (${message}); expected e.g. postgres://user:password@host:5432/baton, with special characters in the password percent-encoded`
  }
}

/**
 * An error of the server refusing DATABASE_URL's user, password or database, or a privilege its user
 * needs, or of a TLS connection it asks for that cannot be made, as the setting to correct; else the
 * error itself.
 */
export function asDatabaseUrlProblem(error: unknown): unknown {
  if (refusesConnectionSettings(error)) return new ConfigError(`DATABASE_URL: the database server refused it: ${error.message}`)
  // At the start, a privilege withheld on a table or schema ended in a stack trace.
  if (lacksPrivilege(error)) {
    return new ConfigError(`DATABASE_URL: its user lacks a privilege Baton needs (${error.message}): connect as the user that owns Baton's tables `
      + '(on an empty database, one that may create tables in its schema), or grant this one the privilege', { cause: error })
  }
  const tls = databaseTlsProblem(error)
  return tls === undefined ? error : new ConfigError(`DATABASE_URL: ${tls}`, { cause: error })
}

function allowedTargetsProblem(text: string): string | undefined {
  try {
    parseAllowedTargets(text)
    return undefined
  } catch (error) {
    return `${(error as Error).message}; expected comma-separated host names and CIDR ranges, e.g. 127.0.0.1/32,provider.internal`
  }
}

function expectation(schema: { anyOf?: { const?: unknown }[] }, message: string): string {
  return schema.anyOf ? `must be one of ${schema.anyOf.map((s) => s.const).join(', ')}` : message
}

/**
 * A listen the settings made fail, as the setting to change. A host that does not resolve fails with
 * ENOTFOUND, which reads as the database being away: left as it was, the process logged "carrying on"
 * and exited 0 without listening.
 */
export function listenProblem(error: unknown, host: string, portName: string, port: number, advice: string): ConfigError | undefined {
  const code = (error as NodeJS.ErrnoException).code
  if (code === 'EADDRINUSE') return new ConfigError(`${portName}: ${host}:${port} is in use; ${advice} (0: any free one)`)
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_FAIL' || code === 'EADDRNOTAVAIL') {
    return new ConfigError(`HOST: "${host}" is not an address of this machine (${code}); use one of its addresses, 127.0.0.1, or 0.0.0.0 for all`)
  }
  return undefined
}

/**
 * How long a SIGTERM keeps the listener open while /health/ready answers 503 (SHUTDOWN_DELAY_MS). Unset,
 * an API process (--role=api), one of the replicas a load balancer spreads requests over, waits 5 s
 * for it to notice; a whole Baton closes at once, as it did before the setting: it is mostly the one
 * process of its data (the embedded database serves no other), with no replica to be sent to instead.
 */
export function shutdownDelayMs(config: Pick<Config, 'SHUTDOWN_DELAY_MS'>, role: 'all' | 'api' | 'worker'): number {
  return config.SHUTDOWN_DELAY_MS ?? (role === 'api' ? 5000 : 0)
}
