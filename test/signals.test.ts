// SIGTERM to `npm start`, `npm run start:api` and `npm run worker` reaches Baton: it drains and exits 0,
// npm exits 0 with it, and no Baton process is left behind holding the port, the data dir or claims.
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { Agent, get } from 'node:http'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { sql } from '../src/db/kysely.js'
import { createTestDatabase, holdRow, waitForLockWait } from './helpers/database.js'
import { runCommand, runScript, workerEnv } from './helpers/process.js'
import { TestProvider } from './helpers/provider.js'

t.setTimeout(180_000)

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

async function dataDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'baton-signals-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/** Starts the npm script, waits for its line, sends the signal to npm alone, and checks that all ends well. */
const OPERATOR_KEY = 'a-test-operator-key-of-enough-length'

/** `--role=api` on a database of its own with these settings, listening: its database, process, port and settings. */
async function apiServer(t: Test, settings: Record<string, string>) {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const env: Record<string, string> = { ...workerEnv(database.name, await dataDir(t), 'api'), BATON_ADMIN_TOKEN: OPERATOR_KEY, PORT: '0', LOG_LEVEL: 'info', ...settings }
  const server = runScript('src/server.ts', env, ['--role=api'])
  t.teardown(() => { server.child.kill('SIGKILL') })
  const [, port] = await server.waitFor(/Baton listening on http:\/\/[^:]+:(\d+)/, 60_000)
  return { database, server, port: port!, env }
}

async function signalNpm(t: Test, script: string[], env: Record<string, string>, ready: RegExp, signal: NodeJS.Signals): Promise<number> {
  const npm = runCommand('npm', script, { NODE_ENV: 'test', ...env, LOG_LEVEL: 'info' }, { group: true })
  // Whatever happens, nothing this test started outlives it.
  t.teardown(() => {
    try {
      process.kill(-npm.child.pid!, 'SIGKILL')
    } catch {
      // the group is gone already
    }
  })
  const [line] = await npm.waitFor(ready, 90_000)
  const pid = Number(/"pid":(\d+)/.exec(line)?.[1])
  t.ok(pid > 0 && pid !== npm.child.pid, `Baton runs as its own process (${pid})`)
  npm.child.kill(signal)
  t.equal(await npm.exited, 0, `npm ${script.join(' ')} exits 0 on ${signal}`)
  t.match(npm.output(), /shutting down/, 'Baton heard the signal and drained')
  t.notOk(isAlive(pid), 'no Baton process is left behind')
  return pid
}

t.test('npm start on the embedded database: SIGTERM drains and frees the port and the data dir', async (t) => {
  const dir = await dataDir(t)
  // SHUTDOWN_DELAY_MS unset: a whole Baton closes at once (the API role's delay has a test of its own below).
  const env = { BATON_DATA_DIR: dir, PORT: '0', DATABASE_URL: '', BATON_ADMIN_TOKEN: 'a-test-operator-key-of-enough-length' }
  await signalNpm(t, ['start'], env, /.*Baton listening on.*/, 'SIGTERM')
  t.notOk(existsSync(join(dir, 'baton.pid')), 'the embedded database\'s lock is released')
})

// A terminal closing sends SIGHUP to its jobs, npm and Baton alike; npm does not forward it and ends at
// once. Node's default for SIGHUP ended Baton the same way: calls cut off mid-flight, the lock left behind.
t.test('npm start, its terminal closed (SIGHUP to the process group): Baton drains and frees the data dir', async (t) => {
  const dir = await dataDir(t)
  const env = { BATON_DATA_DIR: dir, PORT: '0', DATABASE_URL: '', BATON_ADMIN_TOKEN: 'a-test-operator-key-of-enough-length', NODE_ENV: 'test', LOG_LEVEL: 'info' }
  const npm = runCommand('npm', ['start'], env, { group: true })
  t.teardown(() => {
    try {
      process.kill(-npm.child.pid!, 'SIGKILL')
    } catch {
      // the group is gone already
    }
  })
  const [line] = await npm.waitFor(/.*Baton listening on.*/, 90_000)
  const pid = Number(/"pid":(\d+)/.exec(line)?.[1])
  process.kill(-npm.child.pid!, 'SIGHUP')
  await npm.exited
  const started = Date.now()
  while (isAlive(pid) && Date.now() - started < 20_000) await new Promise((resolve) => setTimeout(resolve, 50))
  t.notOk(isAlive(pid), 'Baton ended')
  t.match(npm.output(), /"signal":"SIGHUP".*shutting down/, 'Baton heard the signal and drained')
  t.notOk(existsSync(join(dir, 'baton.pid')), 'the embedded database\'s lock is released')
})

t.test('npm run start:api and npm run worker on Postgres: SIGINT and SIGTERM end them', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const dir = await dataDir(t)
  const env = { ...workerEnv(database.name, dir, 'signal-worker'), BATON_ADMIN_TOKEN: 'a-test-operator-key-of-enough-length', PORT: '0' }
  await signalNpm(t, ['run', 'start:api'], env, /.*Baton listening on.*/, 'SIGINT')
  await signalNpm(t, ['run', 'worker'], env, /.*Baton worker started.*/, 'SIGTERM')
})

// The embedded database takes seconds to open on a first start; a signal then ended the process by the
// default handler (no exit 0) and left the data dir's lock file behind.
t.test('SIGTERM while the embedded database opens: exit 0 and the data dir\'s lock released', async (t) => {
  const dir = await dataDir(t)
  const server = runScript('src/server.ts', { BATON_DATA_DIR: dir, PORT: '0', DATABASE_URL: '', NODE_ENV: 'test', LOG_LEVEL: 'info', BATON_ADMIN_TOKEN: 'a-test-operator-key-of-enough-length' })
  t.teardown(() => { server.child.kill('SIGKILL') })
  const lock = join(dir, 'baton.pid')
  const started = Date.now()
  while (!existsSync(lock) && server.child.exitCode === null && Date.now() - started < 60_000) await new Promise((resolve) => setTimeout(resolve, 10))
  t.ok(existsSync(lock), 'the data dir is locked: the database is opening')
  t.notMatch(server.output(), /Baton listening/, 'not started yet')
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0, 'exit 0')
  t.match(server.output(), /shutting down/)
  t.notOk(existsSync(lock), 'the lock is released')
})

// The server's close waited for every request in flight, and a client sending its body slowly has
// HTTP_REQUEST_TIMEOUT_MS: past the hard limit (grace + 5 s) the process exited 1, its database left open.
t.test('SIGTERM with requests still arriving: the probes read not ready and alive, the slow one is cut off after the grace, exit 0', async (t) => {
  const { server, port, env } = await apiServer(t, { SHUTDOWN_GRACE_MS: '1000', SHUTDOWN_DELAY_MS: '0' })
  // Probes whose requests are still arriving when the drain begins (written first, so the server has
  // read them when the POST arrives): a load balancer must read not ready, and the process alive.
  const probes = await Promise.all(['/health/ready', '/health/live'].map(async (path) => {
    const probe = connect(Number(port), '127.0.0.1')
    t.teardown(() => { probe.destroy() })
    await new Promise((resolve) => probe.once('connect', resolve))
    probe.write(`GET ${path} HTTP/1.1\r\nHost: baton\r\n`)
    let text = ''
    probe.on('data', (chunk: Buffer) => (text += chunk.toString()))
    return { probe, answered: new Promise<string>((resolve) => probe.once('close', () => resolve(text))) }
  }))
  const socket = connect(Number(port), '127.0.0.1')
  t.teardown(() => { socket.destroy() })
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write(`POST /v1/tenants HTTP/1.1\r\nHost: baton\r\nAuthorization: Bearer ${OPERATOR_KEY}\r\n` +
    'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name":')
  await server.waitFor(/incoming request/)
  const closed = new Promise((resolve) => socket.once('close', resolve))
  const signalled = Date.now()
  server.child.kill('SIGTERM')
  await server.waitFor(/shutting down/)
  for (const { probe } of probes) probe.write('\r\n')
  const [ready, live] = await Promise.all(probes.map(({ answered }) => answered))
  t.match(ready, /^HTTP\/1\.1 503 /, 'not ready once the drain began')
  t.match(ready, /content-type: application\/problem\+json/i)
  t.match(ready, /"detail":"[^"]*stopping/)
  t.match(live, /^HTTP\/1\.1 200 /, 'alive until the end')
  t.equal(await server.exited, 0, 'exit 0')
  const took = Date.now() - signalled
  t.ok(took < 4000, `exited ${took} ms after the signal: about the grace of ${env.SHUTDOWN_GRACE_MS} ms, not the hard limit 5 s later`)
  t.notMatch(server.output(), /did not finish in time/)
  await closed
})

// A request cut off at the grace whose statement still waited on a lock held elsewhere kept the pool's
// close waiting for that statement (up to DATABASE_STATEMENT_TIMEOUT_MS, 10 s): the process met the
// hard limit (delay + grace + 5 s) and exited 1.
t.test('SIGTERM while a request waits on a lock held elsewhere: it is cut off after the grace, exit 0', async (t) => {
  const key = OPERATOR_KEY
  const { database, server, port, env } = await apiServer(t, { SHUTDOWN_GRACE_MS: '1000', SHUTDOWN_DELAY_MS: '0' })
  const held = await holdRow(database.db, sql`lock table tenants in access exclusive mode`)
  t.teardown(() => held.release())
  const answer = getAlone(Number(port), '/v1/tenants', { authorization: `Bearer ${key}` })
  await waitForLockWait(database.db)
  const signalled = Date.now()
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0, 'exit 0')
  const took = Date.now() - signalled
  t.ok(took < 4000, `exited ${took} ms after the signal: about the grace of ${env.SHUTDOWN_GRACE_MS} ms, not the hard limit 5 s later`)
  t.notMatch(server.output(), /did not finish in time/)
  t.equal(await answer, 'ECONNRESET', 'the request was cut off')
})

// npm start (API and scheduler in one process) kept its listener open until the scheduler had drained
// its calls in flight: it took new requests all that time (with SHUTDOWN_DELAY_MS 0, which closes at
// once), and on the embedded database they held its one connection until the drain passed the hard limit.
t.test('SIGTERM to API and scheduler in one process: the listener closes at once while a call in flight drains', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const dir = await dataDir(t)
  const key = 'a-test-operator-key-of-enough-length'
  const provider = await TestProvider.start()
  t.teardown(() => provider.close())
  let called = () => {}
  const calling = new Promise<void>((resolve) => { called = resolve })
  provider.always(() => {
    called()
    return { status: 200, body: 'ok', delayMs: 2500 }
  })
  const env = {
    ...workerEnv(database.name, dir, 'all'), BATON_ADMIN_TOKEN: key, PORT: '0', LOG_LEVEL: 'info', SHUTDOWN_GRACE_MS: '5000', SHUTDOWN_DELAY_MS: '0',
    WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true'
  }
  const server = runScript('src/server.ts', env)
  t.teardown(() => { server.child.kill('SIGKILL') })
  const [, port] = await server.waitFor(/Baton listening on http:\/\/[^:]+:(\d+)/, 60_000)
  const base = `http://127.0.0.1:${port}`
  const send = async (method: string, path: string, token: string, body?: unknown, headers: Record<string, string> = {}) => {
    const response = await fetch(`${base}${path}`, {
      method, headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
    const text = await response.text()
    if (response.status >= 300) throw new Error(`${method} ${path}: ${response.status} ${text}`)
    return JSON.parse(text) as Record<string, string>
  }
  const tenant = await send('POST', '/v1/tenants', key, { name: 'Muster', webId: '48213', timeZone: 'Europe/Berlin' })
  const tenantKey = (await send('POST', `/v1/tenants/${tenant.id}/api-keys`, key, { name: 'crm' })).key!
  const user = await send('POST', '/v1/users', tenantKey, { name: 'Anna', email: 'anna@example.com' })
  const service = await send('POST', '/v1/marketplace-services', key, { name: 'Valuation', provider: 'ValueCo', webhookUrl: `${provider.url}/hook` })
  await send('PUT', `/v1/marketplace-services/${service.id}/activation`, tenantKey)
  const template = await send('POST', '/v1/process-templates', tenantKey, { name: 'Re-value', controllerUserId: user.id })
  await send('POST', `/v1/process-templates/${template.id}/steps`, tenantKey, {
    kind: 'webhook', name: 'Ask', start: { mode: 'afterPrevious' }, responsibility: 'processResponsible', serviceId: service.id, parameters: {}
  })
  const { version } = await send('GET', `/v1/process-templates/${template.id}`, tenantKey)
  await send('PATCH', `/v1/process-templates/${template.id}`, tenantKey, { active: true }, { 'if-match': `"${version}"` })
  await send('POST', '/v1/process-instances', tenantKey, { templateId: template.id, responsibleUserId: user.id })
  await calling
  server.child.kill('SIGTERM')
  await server.waitFor(/shutting down/)
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.equal(server.child.exitCode, null, 'still draining the call in flight')
  t.equal(await getAlone(Number(port), '/health/live'), 'ECONNREFUSED', 'a new connection is refused meanwhile')
  t.equal(await server.exited, 0, 'exit 0 once the call is recorded')
  t.match(server.output(), /"outcome":"succeeded"/, 'the call in flight finished')
})

/** A GET on a connection of its own, as a client a load balancer just sent; the status, or the connection's error code. */
function getAlone(port: number, path: string, headers: Record<string, string> = {}): Promise<number | string> {
  return new Promise((resolve) => {
    const request = get({ host: '127.0.0.1', port, path, headers, agent: false }, (response) => {
      response.resume()
      response.on('end', () => resolve(response.statusCode!))
    })
    request.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message))
  })
}

// The API closed its listener at the signal: a load balancer that had not yet read the 503 of
// /health/ready sent new connections on, and each was refused.
t.test('SIGTERM to the API: new connections are served for SHUTDOWN_DELAY_MS while /health/ready answers 503, then the listener closes', async (t) => {
  const key = OPERATOR_KEY
  const { server, port } = await apiServer(t, { SHUTDOWN_DELAY_MS: '2000', SHUTDOWN_GRACE_MS: '1000' })
  const signalled = Date.now()
  server.child.kill('SIGTERM')
  await server.waitFor(/shutting down/)
  t.equal(await getAlone(Number(port), '/health/ready'), 503, 'a new connection reads not ready')
  t.equal(await getAlone(Number(port), '/v1/tenants', { authorization: `Bearer ${key}` }), 200, 'and a request on a new connection is served')
  t.equal(await server.exited, 0, 'exit 0')
  const took = Date.now() - signalled
  t.ok(took >= 2000 && took < 2000 + 4000, `exited ${took} ms after the signal: after the delay, not at the hard limit`)
  t.equal(await getAlone(Number(port), '/health/live'), 'ECONNREFUSED', 'the listener is closed')
})

/** Sends one request on an open connection and reads its answer: status, headers, and whether the server then closed it. */
function exchange(socket: Socket, request: string): Promise<{ head: string; closed: Promise<void> }> {
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  return new Promise((resolve, reject) => {
    let text = ''
    const onData = (chunk: Buffer) => {
      text += chunk.toString()
      const end = text.indexOf('\r\n\r\n')
      const length = Number(/content-length: (\d+)/i.exec(text)?.[1] ?? NaN)
      if (end >= 0 && text.length >= end + 4 + length) {
        socket.off('data', onData)
        resolve({ head: text.slice(0, end), closed })
      }
    }
    socket.on('data', onData)
    socket.once('error', reject)
    socket.write(request)
  })
}

// A load balancer (or any client) keeps its connections to the API open and sends on them. During
// SHUTDOWN_DELAY_MS they were kept alive, so when the listener closed, Node closed them as idle while
// a request could be on its way: the client read ECONNRESET for a request never served (a 502 at a
// proxy) and could not tell whether a POST had been made. From the signal on, each answer says
// Connection: close, so clients move to new connections, which are served until the listener closes
// and refused (ECONNREFUSED: nothing was sent) after.
t.test('SIGTERM to the API: answers on kept-alive connections say Connection: close, so none meets the close of the listener on one', async (t) => {
  const key = OPERATOR_KEY
  const { server, port } = await apiServer(t, { SHUTDOWN_DELAY_MS: '2500', SHUTDOWN_GRACE_MS: '1000', RATE_LIMIT_MAX: '1000000' })
  const socket = connect(Number(port), '127.0.0.1')
  t.teardown(() => { socket.destroy() })
  await new Promise((resolve) => socket.once('connect', resolve))
  const requestFor = (path: string) => `GET ${path} HTTP/1.1\r\nHost: baton\r\nAuthorization: Bearer ${key}\r\n\r\n`
  const before = await exchange(socket, requestFor('/v1/tenants'))
  t.match(before.head, /^HTTP\/1\.1 200 /)
  t.match(before.head, /connection: keep-alive/i, 'kept alive before the signal')

  // Clients that send one request after another on kept-alive connections, through the signal and the close.
  const agent = new Agent({ keepAlive: true, maxSockets: 8 })
  t.teardown(() => agent.destroy())
  let sending = true
  const outcomes: string[] = []
  const clients = Array.from({ length: 8 }, async () => {
    while (sending) {
      outcomes.push(await new Promise<string>((resolve) => {
        const request = get({ host: '127.0.0.1', port: Number(port), path: '/health/live', agent }, (response) => {
          response.resume()
          response.on('end', () => resolve(String(response.statusCode)))
        })
        // A connection the listener's close met before its request was read (ECONNRESET on a new one) is
        // the race the delay is there to avoid; a connection kept alive by the server is not.
        request.on('error', (error: NodeJS.ErrnoException) => resolve(`${error.code ?? error.message}${request.reusedSocket ? ' on a kept-alive connection' : ''}`))
      }))
    }
  })
  await new Promise((resolve) => setTimeout(resolve, 300))
  server.child.kill('SIGTERM')
  await server.waitFor(/shutting down/)
  const during = await exchange(socket, requestFor('/v1/tenants'))
  t.match(during.head, /^HTTP\/1\.1 200 /, 'a request on the kept-alive connection during the delay is served')
  t.match(during.head, /connection: close/i, 'and its answer says the connection closes')
  const closedSoon = await Promise.race([during.closed.then(() => true), new Promise((resolve) => setTimeout(() => resolve(false), 1000))])
  t.ok(closedSoon, 'the server closed that connection after the answer, not at the close of its listener')

  t.equal(await server.exited, 0, 'exit 0')
  sending = false
  await Promise.all(clients)
  const count = (outcome: string) => outcomes.filter((o) => o === outcome).length
  t.comment(JSON.stringify(outcomes.reduce<Record<string, number>>((n, o) => ({ ...n, [o]: (n[o] ?? 0) + 1 }), {})))
  const resets = outcomes.filter((o) => o.endsWith('on a kept-alive connection')).length
  t.equal(resets, 0, `no request of ${outcomes.length} met the close on a kept-alive connection (${count('200')} served, ${count('ECONNREFUSED')} refused after the close)`)
})
