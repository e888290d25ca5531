// Baton on a Postgres server that takes TLS, as a managed one requires: DATABASE_URL's sslmode and
// sslrootcert as node-postgres reads them. The local server has ssl off, so a proxy in front of it
// (test/helpers/pg-tls-proxy.ts) ends TLS with certificates made for this file.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import pino from 'pino'
import t from 'tap'
import { buildApp, serverOptions } from '../../src/app.js'
import { asDatabaseUrlProblem, ConfigError, loadConfig } from '../../src/config.js'
import { openPostgres } from '../../src/db/connect.js'
import { isDatabaseUnavailable, unavailableReason } from '../../src/db/errors.js'
import { hashKey } from '../../src/lib/keys.js'
import { logOptions } from '../../src/log-options.js'
import { sql } from '../../src/db/kysely.js'
import { ADMIN_URL, connectionSettings, createTestDatabase, databaseUrl } from '../helpers/database.js'
import { startPgTlsProxy } from '../helpers/pg-tls-proxy.js'
import { client } from '../helpers/app.js'
import { runScript } from '../helpers/process.js'
import { setupRuntime } from '../helpers/runtime.js'
import { makeCertificates } from '../helpers/tls.js'

const certificates = await makeCertificates(t)
const good = await startPgTlsProxy({ answer: 'S', pair: certificates.good })
const selfSigned = await startPgTlsProxy({ answer: 'S', pair: certificates.selfSigned })
const otherName = await startPgTlsProxy({ answer: 'S', pair: certificates.otherName })
const expired = await startPgTlsProxy({ answer: 'S', pair: certificates.expired })
const noTls = await startPgTlsProxy({ answer: 'N' })
t.teardown(() => Promise.all([good, selfSigned, otherName, expired, noTls].map((proxy) => proxy.close())))

const rootCert = `sslrootcert=${encodeURIComponent(certificates.caFile)}`
const PASSWORD = 'tls-test-secret-pw'
/** ADMIN_URL with a password (trust auth ignores it), to look for in what an operator reads. */
const withPassword = (url: string) => {
  const parsed = new URL(url)
  parsed.password = PASSWORD
  return parsed.toString()
}

/** What a pool on `url` reads back of its own connection's settings, or the error of its first statement. */
const settingsOver = (url: string, quietTriggers = false) => connectionSettings(url, { quietTriggers, connectTimeoutMs: 3000 })

const failureOver = async (url: string) => {
  const error = await settingsOver(url).then(() => undefined, (caught: unknown) => caught)
  if (error === undefined) throw new Error(`${url} connected`)
  return error
}

const refusal = async (url: string) => {
  const error = await failureOver(url)
  const problem = asDatabaseUrlProblem(error)
  if (!(problem instanceof ConfigError)) throw new Error(`not a setting to correct: ${String(error)}`)
  return problem.message
}

t.test('verify-full with the CA as sslrootcert: encrypted, and Baton\'s own connection options arrive over TLS', async (t) => {
  const before = good.encrypted
  const settings = await settingsOver(`${good.url(ADMIN_URL)}?sslmode=verify-full&${rootCert}`, true)
  t.equal(settings.jit, 'off')
  t.equal(settings.notify, 'off', 'a quiet connection stays quiet')
  t.equal(good.encrypted, before + 1, 'the connection was encrypted')
  t.match(good.startups.at(-1), { options: /(^| )-c jit=off .*-c baton\.notify=off$/ }, 'sent inside TLS, in the startup message')
  const named = await settingsOver(`${good.url(ADMIN_URL, 'localhost')}?sslmode=verify-full&${rootCert}&options=-c%20work_mem%3D8MB`)
  t.same([named.workMem, named.jit], ['8MB', 'off'], 'a host name the certificate holds; options of the string beside Baton\'s (read by pg-connection-string)')
  t.equal(good.encrypted, before + 2)
})

t.test('sslmode=require checks the certificate as verify-full does: a self-signed one is refused, in words naming DATABASE_URL', async (t) => {
  const message = await refusal(`${selfSigned.url(withPassword(ADMIN_URL))}?sslmode=require`)
  t.match(message, /^DATABASE_URL: the database server's TLS certificate was refused: self-signed certificate \(not issued by a certificate authority Baton trusts\)/)
  t.match(message, /sslrootcert=<file>/)
  t.match(message, /NODE_EXTRA_CA_CERTS/)
  t.match(message, /sslmode=no-verify/)
  t.notMatch(message, PASSWORD)
  t.match(await refusal(`${good.url(ADMIN_URL)}?sslmode=verify-full`), /TLS certificate was refused: unable to verify the first certificate/, 'a CA not given is not trusted')
  t.match(await refusal(`${good.url(ADMIN_URL)}?sslmode=verify-ca`), /TLS certificate was refused/, 'nor with verify-ca')
  t.match(await refusal(`${selfSigned.url(ADMIN_URL)}?ssl=true`), /TLS certificate was refused: self-signed certificate/, 'ssl=true checks it too')
  const before = good.encrypted
  t.equal((await settingsOver(`${good.url(ADMIN_URL)}?${rootCert}`)).jit, 'off', 'sslrootcert alone asks for TLS')
  t.equal(good.encrypted, before + 1)
  t.match(await refusal(`${otherName.url(ADMIN_URL)}?${rootCert}`), /not for the host DATABASE_URL names/, 'and checks the host name')
})

t.test('a certificate for another host name, or an expired one, is refused, naming the names', async (t) => {
  const message = await refusal(`${otherName.url(ADMIN_URL)}?sslmode=verify-full&${rootCert}`)
  t.match(message, /^DATABASE_URL: the database server's TLS certificate was refused: it is not for the host DATABASE_URL names \(IP: 127\.0\.0\.1 is not in the cert's list/)
  t.notMatch(message, certificates.ca.toString().split('\n')[1]!, 'the CA\'s contents are not in it')
  t.match(await refusal(`${expired.url(ADMIN_URL)}?sslmode=verify-full&${rootCert}`), /^DATABASE_URL: the database server's TLS certificate was refused: certificate has expired$/, 'an expired one')
})

t.test('a refused certificate in the log: who it is for and who issued it, not the whole chain in bytes', async (t) => {
  const error = await failureOver(`${otherName.url(ADMIN_URL)}?sslmode=verify-full&${rootCert}`)
  const lines: string[] = []
  const logger = pino(logOptions(loadConfig({ LOG_LEVEL: 'info' }), false), new Writable({ write: (chunk: Buffer, _encoding, done) => { lines.push(String(chunk)); done() } }))
  logger.warn({ err: error }, 'database connection lost; it reconnects on next use')
  const { err } = JSON.parse(lines[0]!) as { err: Record<string, unknown> }
  t.match(err, { code: 'ERR_TLS_CERT_ALTNAME_INVALID', message: /not in the cert's list/ })
  t.same(err.cert, {
    subject: { CN: 'other' }, issuer: { CN: 'Baton test CA' }, subjectaltname: 'DNS:other.example',
    valid_from: 'Jan  1 00:00:00 2020 GMT', valid_to: 'Dec 31 00:00:00 2099 GMT'
  })
  t.ok(lines[0]!.length < 2000, `a line of ${lines[0]!.length} characters`)
})

t.test('no-verify, and uselibpqcompat=true with require, encrypt without checking the certificate, as libpq\'s require does', async (t) => {
  const before = selfSigned.encrypted
  t.equal((await settingsOver(`${selfSigned.url(ADMIN_URL)}?sslmode=no-verify`)).jit, 'off')
  t.equal((await settingsOver(`${selfSigned.url(ADMIN_URL)}?uselibpqcompat=true&sslmode=require`)).jit, 'off')
  t.equal(selfSigned.encrypted, before + 2, 'both encrypted')
  t.match(await refusal(`${selfSigned.url(ADMIN_URL)}?uselibpqcompat=true&sslmode=verify-full`), /self-signed certificate/, 'libpq\'s verify-full still checks')
})

t.test('PGSSLMODE in the environment stands for a DATABASE_URL without sslmode, as node-postgres reads it', async (t) => {
  const given = process.env.PGSSLMODE
  t.teardown(() => {
    if (given === undefined) delete process.env.PGSSLMODE
    else process.env.PGSSLMODE = given
  })
  process.env.PGSSLMODE = 'require'
  t.match(await refusal(selfSigned.url(ADMIN_URL)), /TLS certificate was refused: self-signed certificate/, 'require checks the certificate here too')
  process.env.PGSSLMODE = 'no-verify'
  const before = selfSigned.encrypted
  t.equal((await settingsOver(selfSigned.url(ADMIN_URL))).jit, 'off')
  t.equal(selfSigned.encrypted, before + 1, 'no-verify: encrypted, unchecked')
  t.match(await refusal(`${selfSigned.url(ADMIN_URL)}?sslmode=verify-full`), /self-signed certificate/, 'the string\'s sslmode wins')
})

t.test('a server without TLS is refused when DATABASE_URL asks for it; sslmode=disable connects in plain text', async (t) => {
  for (const ask of ['sslmode=require', 'sslmode=no-verify', 'ssl=true']) {
    t.match(await refusal(`${noTls.url(ADMIN_URL)}?${ask}`), /^DATABASE_URL: the database server does not take TLS connections, and DATABASE_URL asks for TLS/, ask)
  }
  const before = noTls.refused
  t.equal((await settingsOver(`${noTls.url(ADMIN_URL)}?sslmode=disable`)).jit, 'off')
  t.equal(noTls.refused, before + 1, 'it never asked for TLS')
})

t.test('a running process whose database\'s TLS is refused (a certificate renewed by another authority) waits for it as for an outage: 503 with Retry-After, not ready', async (t) => {
  for (const url of [`${selfSigned.url(ADMIN_URL)}?sslmode=require`, `${noTls.url(ADMIN_URL)}?sslmode=verify-full`]) {
    const error = await failureOver(url)
    t.ok(isDatabaseUnavailable(error), String(error))
    t.equal(unavailableReason(error), 'the database cannot be reached over TLS as DATABASE_URL asks')
  }
  const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent' })
  const database = openPostgres(`${selfSigned.url(ADMIN_URL)}?sslmode=require`, { poolMax: 1, connectTimeoutMs: 3000 })
  const key = 'tls-test-operator-key-0123456789abcdef'
  const app = await buildApp({ config, db: database.db, operatorKeyHash: hashKey(key) }, serverOptions(config, false))
  t.teardown(async () => {
    await app.close()
    await database.close()
  })
  const ready = await client(app).get('/health/ready')
  t.equal(ready.statusCode, 503)
  t.match(ready.data, { detail: 'The database cannot be reached over TLS as DATABASE_URL asks (its certificate refused, or no TLS taken); the log says why.' })
  const tenants = await client(app, key).get('/v1/tenants')
  t.equal(tenants.statusCode, 503, 'the request was not wrong: it is worth sending again')
  t.equal(tenants.headers['retry-after'], '2')
})

t.test('a scheduler pass over TLS: a due webhook step\'s call is made, and its outcome reads back', async (t) => {
  const rt = await setupRuntime(t)
  const overTls = openPostgres(`${good.url(rt.databaseUrl)}?sslmode=verify-full&${rootCert}`, { poolMax: 4 })
  t.teardown(() => overTls.close())
  const instance = await rt.start(await rt.template([{ kind: 'webhook', name: 'Value it' }]))
  const before = good.encrypted
  await rt.newScheduler({}, undefined, { db: overTls.db }).runOnce()
  t.ok(good.encrypted > before, 'the scheduler connected over TLS')
  t.equal(rt.provider.calls.length, 1, 'the provider was called')
  const { data } = await rt.api.get(`/v1/deliveries/${instance.steps[0].delivery.id as string}`)
  t.match(data, { status: 'succeeded', attempts: [{ outcome: 'succeeded', statusCode: 200 }] }, 'what the pass wrote over TLS reads back')
})

/** The settings of a server process on `url`; the tests add their own. */
const serverEnv = (url: string, dataDir: string) => ({
  DATABASE_URL: url, BATON_DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'info', NODE_ENV: 'production',
  BATON_ADMIN_TOKEN: 'tls-test-operator-key-0123456789abcdef', SMTP_URL: '', SHUTDOWN_DELAY_MS: '0'
})

t.test('the start: a refused certificate or a server without TLS ends it with the setting to correct, not a stack trace', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-pgtls-'))
  t.teardown(() => rm(dataDir, { recursive: true, force: true }))
  const cases = [
    { url: `${selfSigned.url(withPassword(ADMIN_URL))}?sslmode=require`, said: /^DATABASE_URL: the database server's TLS certificate was refused: self-signed certificate/m },
    { url: `${noTls.url(withPassword(ADMIN_URL))}?sslmode=verify-full&${rootCert}`, said: /^DATABASE_URL: the database server does not take TLS connections/m }
  ]
  await Promise.all(cases.map(async ({ url, said }) => {
    const server = runScript('src/server.ts', serverEnv(url, dataDir))
    t.teardown(() => { server.child.kill('SIGKILL') })
    // A start that waited for the database as for an outage would try again for ever.
    const still = new Promise((resolve) => setTimeout(() => resolve('still starting'), 20_000).unref())
    t.equal(await Promise.race([server.exited, still]), 1)
    const output = server.output()
    t.match(output, said)
    t.notMatch(output, /unexpected error|"stack"|at async/, 'no fatal log line, no stack trace')
    t.notMatch(output, PASSWORD, 'the password is not shown')
    t.notMatch(output, certificates.ca.toString().split('\n')[1]!, 'nor the CA\'s contents')
  }))
})

t.test('a server process on verify-full with the CA serves over TLS: ready, and what it writes reads back', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-pgtls-'))
  t.teardown(() => rm(dataDir, { recursive: true, force: true }))
  const before = { encrypted: good.encrypted, startups: good.startups.length }
  const env = serverEnv(`${good.url(withPassword(databaseUrl(database.name)))}?sslmode=verify-full&${rootCert}`, dataDir)
  const server = runScript('src/server.ts', env)
  t.teardown(() => { server.child.kill('SIGKILL') })
  const [, address] = await server.waitFor(/Baton listening on (http:\/\/[^"\s]+)/)
  t.equal((await fetch(`${address}/health/ready`)).status, 200, 'ready')
  const headers = { authorization: `Bearer ${env.BATON_ADMIN_TOKEN}`, 'content-type': 'application/json' }
  const created = await fetch(`${address}/v1/tenants`, { method: 'POST', headers, body: JSON.stringify({ name: 'Über TLS GmbH', webId: 'tls-1', timeZone: 'Europe/Berlin' }) })
  t.equal(created.status, 201)
  const { id } = await created.json() as { id: string }
  const read = await fetch(`${address}/v1/tenants/${id}`, { headers })
  t.match(await read.json(), { id, name: 'Über TLS GmbH' })
  const rows = await sql<{ name: string }>`select name from tenants where id = ${id}`.execute(database.db)
  t.same(rows.rows, [{ name: 'Über TLS GmbH' }], 'written to the database behind the TLS server')
  // The scheduler, started before the line that says it listens, opened its LISTEN connection (the server's keepalive its only options) over TLS too.
  const mine = good.startups.slice(before.startups)
  t.equal(good.encrypted - before.encrypted, mine.length, 'every connection of the process was encrypted')
  t.ok(mine.every((startup) => startup.options?.startsWith('-c tcp_keepalives_idle=60 ')), 'each with the server\'s keepalive')
  t.ok(mine.some((startup) => !startup.options?.includes('jit')), 'the scheduler\'s LISTEN connection among them')
  t.ok(mine.filter((startup) => startup.options?.includes('jit')).every((startup) => / -c jit=off( |$)/.test(startup.options!)), 'the pools\' each with jit=off')
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
  t.notMatch(server.output(), PASSWORD, 'the password is not shown')
})
