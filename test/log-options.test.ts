import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { stripVTControlCharacters } from 'node:util'
import { Writable } from 'node:stream'
import pino from 'pino'
import t from 'tap'
import { loadConfig } from '../src/config.js'
import { sql } from '../src/db/kysely.js'
import { logOptions, PRETTY_OPTIONS } from '../src/log-options.js'
import { adminQuery, createTestDatabase } from './helpers/database.js'
import { ROOT, TS_LOADER } from './helpers/process.js'

t.test('pretty lines only at a terminal outside production; JSON otherwise', async (t) => {
  const pretty = { target: /node_modules\/pino-pretty\//, options: PRETTY_OPTIONS }
  t.match(logOptions(loadConfig({ LOG_LEVEL: 'debug', NODE_ENV: 'development' }), true), { level: 'debug', transport: pretty }, 'npm start at a terminal')
  t.match(logOptions(loadConfig({ LOG_LEVEL: 'info', NODE_ENV: 'test' }), true), { transport: pretty })
  t.notOk('transport' in logOptions(loadConfig({ LOG_LEVEL: 'info', NODE_ENV: 'production' }), true), 'production at a terminal: JSON')
  t.notOk('transport' in logOptions(loadConfig({ LOG_LEVEL: 'info', NODE_ENV: 'development' }), false), 'piped or collected: JSON')
  t.ok(logOptions(loadConfig({ LOG_LEVEL: 'info', NODE_ENV: 'development' }), true).redact, 'redaction holds either way')
})

t.test('pino-pretty loads as the transport and writes readable lines', async (t) => {
  // A process of its own, as server.ts builds its logger: the transport's worker thread writes to its stdout.
  const dir = await mkdtemp(join(tmpdir(), 'baton-pretty-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const script = join(dir, 'log.mjs')
  await writeFile(script, `
    import pino from ${JSON.stringify(import.meta.resolve('pino'))}
    const { logOptions } = await import(${JSON.stringify(pathToFileURL(join(ROOT, 'src/log-options.ts')).href)})
    const log = pino(logOptions({ LOG_LEVEL: 'info', NODE_ENV: 'development' }, true))
    log.info({ deliveryId: 'd-1' }, 'Baton listening on http://127.0.0.1:3000')
    log.debug('not at info')`)
  const child = spawn(process.execPath, [TS_LOADER, script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()))
  const [code] = await once(child, 'exit') as [number]
  t.equal(code, 0, output)
  const text = stripVTControlCharacters(output)
  t.match(text, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: Baton listening on http:\/\/127\.0\.0\.1:3000$/m)
  t.match(text, /deliveryId: "d-1"/)
  t.notMatch(text, /"level":|not at info/, 'not JSON, and at its level')
  t.notMatch(text, /pid|hostname/, 'without pid and host name')
})

// Postgres names the whole row a constraint refused ("Failing row contains (…)"): a free target's
// secret, kept unsealed without BATON_SECRETS_KEY, or an e-mail address would reach the log with it.
t.test('a logged constraint violation keeps its code, constraint and table but not the row it names', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const secret = 'whsec_Hq3mZ8vR2nT7yK4pW9sX1cB6dF0gJ5aLmNoPqRsT'
  await sql`create table refused (secret text, url text not null)`.execute(database.db)
  const error = await sql`insert into refused values (${secret}, null)`.execute(database.db).then(() => undefined, (error: unknown) => error)
  t.match(error, { code: '23502', detail: /Failing row contains/ }, 'Postgres names the row')
  const lines: string[] = []
  const logger = pino(logOptions(loadConfig({ LOG_LEVEL: 'info' }), false), new Writable({ write: (chunk: Buffer, _encoding, done) => { lines.push(String(chunk)); done() } }))
  logger.error({ err: error }, 'request failed')
  const line = JSON.parse(lines[0]!)
  t.match(line.err, { code: '23502', table: 'refused', column: 'url', detail: 'the failing row [redacted]', message: /null value in column "url"/ })
  t.notOk(lines[0]!.includes(secret), 'the secret is not in the line')
  // As a server whose messages are in German writes it.
  const german = Object.assign(new Error('NULL-Wert in Spalte »url« verletzt Not-Null-Constraint'), { code: '23514', detail: `Fehlgeschlagene Zeile enthält (${secret}, null).` })
  logger.error({ err: german }, 'request failed')
  t.match(JSON.parse(lines[1]!).err, { code: '23514', detail: 'the failing row [redacted]' }, 'known by its code, whatever the language')
  const viewCheck = Object.assign(new Error('new row violates check option for view "v"'), { code: '44000', detail: `Failing row contains (${secret}).` })
  logger.error({ err: viewCheck }, 'request failed')
  t.match(JSON.parse(lines[2]!).err, { code: '44000', detail: 'the failing row [redacted]' }, 'and by its words, whatever its code')
  const other = new Error('another error') as Error & { detail: string }
  other.detail = 'Key (web_id)=(x) already exists.'
  logger.error({ err: other }, 'request failed')
  t.match(JSON.parse(lines[3]!).err, { detail: 'Key (web_id)=(x) already exists.' }, 'other details stay')
  t.notOk(lines.some((line) => line.includes(secret)), 'no line holds the secret')
})

// pg-pool hangs the connection that broke on its error (err.client): the whole pg Client, its socket,
// the SQL of its prepared statements and the backend's cancel key (processID and secretKey, which a
// CancelRequest presents) were written in the "database connection lost" line, 4 KB of it.
t.test('a lost connection\'s error is logged without the pg client pg-pool hangs on it', async (t) => {
  const errors: Error[] = []
  const database = await createTestDatabase({ poolMax: 1, onError: (error) => errors.push(error) })
  t.teardown(() => database.drop())
  await sql`select 1`.execute(database.db)
  await adminQuery(`select pg_terminate_backend(pid) from pg_stat_activity where datname = '${database.name}'`)
  for (const until = Date.now() + 10_000; !errors.some((error) => 'client' in error);) {
    if (Date.now() > until) throw new Error(`no error with its client within 10 s: ${errors.map((error) => error.message).join('; ')}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  const error = errors.find((error) => 'client' in error) as Error & { client: { secretKey: number } }
  t.type(error.client.secretKey, 'number', 'pg-pool hangs the client, cancel key and all, on the error')
  const lines: string[] = []
  const logger = pino(logOptions(loadConfig({ LOG_LEVEL: 'info' }), false), new Writable({ write: (chunk: Buffer, _encoding, done) => { lines.push(String(chunk)); done() } }))
  logger.warn({ err: error }, 'database connection lost; it reconnects on next use')
  const { err } = JSON.parse(lines[0]!) as { err: Record<string, unknown> }
  t.match(err, { code: '57P01', message: /terminating connection/ }, 'the error itself stays')
  t.notOk('client' in err, 'no client')
  t.notOk(lines[0]!.includes(String(error.client.secretKey)), 'nor the cancel key')
  t.ok(lines[0]!.length < 2000, `a line of ${lines[0]!.length} characters`)
})

// An operator key of the operator's own choosing (BATON_ADMIN_TOKEN) need not start with bop_, which
// the URL's redaction looks for: a client that put it in a path or a query parameter had it logged.
t.test('an operator key of the operator\'s own choosing is redacted from logged URLs, as written or percent-encoded', async (t) => {
  const token = 'our-own-operator-token:0123456789'
  const lines: string[] = []
  const logger = pino(logOptions(loadConfig({ LOG_LEVEL: 'info', BATON_ADMIN_TOKEN: token }), false), new Writable({ write: (chunk: Buffer, _encoding, done) => { lines.push(String(chunk)); done() } }))
  const lowerCase = encodeURIComponent(token).replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase())
  const inPart = token.replace('-', '%2D')
  for (const url of [`/v1/tenants/${token}`, `/v1/tenants?q=${encodeURIComponent(token)}`, `/v1/tenants?cursor=${token}`, `/v1/tenants?q=${lowerCase}%2fx`, `/v1/${inPart}`]) {
    logger.info({ req: { method: 'GET', url, headers: {} } }, 'incoming request')
  }
  t.same(lines.map((line) => JSON.parse(line).req.url),
    ['/v1/tenants/[redacted]', '/v1/tenants?q=[redacted]', '/v1/tenants?cursor=[redacted]', '/v1/tenants?q=[redacted]%2fx', '/v1/[redacted]'])
  t.notOk(lines.some((line) => line.includes('0123456789')), 'no line holds the key')

  // A key that holds an escape of its own is replaced as written and as encodeURIComponent writes it.
  const escaping = 'our-own-token%41bcdef-0123456789'
  const more: string[] = []
  const escapingLogger = pino(logOptions(loadConfig({ LOG_LEVEL: 'info', BATON_ADMIN_TOKEN: escaping }), false), new Writable({ write: (chunk: Buffer, _encoding, done) => { more.push(String(chunk)); done() } }))
  for (const url of [`/v1/${escaping}`, `/v1/tenants?q=${encodeURIComponent(escaping)}`]) escapingLogger.info({ req: { method: 'GET', url, headers: {} } }, 'incoming request')
  t.same(more.map((line) => JSON.parse(line).req.url), ['/v1/[redacted]', '/v1/tenants?q=[redacted]'])
})
