import net from 'node:net'
import t, { type Test } from 'tap'
import { openPostgres, type DB } from '../../../src/db/connect.js'
import { hashKey } from '../../../src/lib/keys.js'
import { BatonMetrics } from '../../../src/lib/metrics.js'
import { startWorkerServer } from '../../../src/modules/health/worker-server.js'
import { TestClock } from '../../helpers/clock.js'
import { createTestDatabase, databaseUrl } from '../../helpers/database.js'

const QUIET = { warn() {}, error() {} }
const KEY = 'bop_a-test-operator-key-of-enough-length'

/** A worker listener on `db`, closed with the test, and then `close` (the database's drop or close). */
async function listen(t: Test, db: DB, close: () => Promise<void>) {
  const server = await startWorkerServer({
    db, clock: new TestClock(), metrics: new BatonMetrics(), log: QUIET, operatorKeyHash: async () => hashKey(KEY)
  }, '127.0.0.1', 0)
  t.teardown(async () => {
    await server.close()
    await close()
  })
  return server
}

t.test('the worker listener answers probes, metrics for the operator, and problems otherwise', async (t) => {
  const database = await createTestDatabase()
  const server = await listen(t, database.db, () => database.drop())
  const call = (path: string, init: RequestInit = {}) => fetch(`${server.address}${path}`, init)

  t.same(await (await call('/health/live')).json(), { status: 'ok' })
  t.same(await (await call('/health/ready?verbose=1')).json(), { status: 'ok' }, 'a query string does not matter')
  t.same(await (await call('/health/ready/')).json(), { status: 'ok' }, 'a trailing slash does not matter, as on the API')
  t.equal((await call('/metrics/', { headers: { authorization: `Bearer ${KEY}` } })).status, 200)
  t.equal((await call('/health//')).status, 404)
  const head = await call('/health/live', { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(await head.text(), '', 'HEAD has no body')

  const metrics = await call('/metrics', { headers: { authorization: `Bearer ${KEY}` } })
  t.equal(metrics.status, 200)
  const text = await metrics.text()
  t.match(text, /^baton_steps\{state="due"\} 0$/m)
  t.match(text, /^process_start_time_seconds \d+$/m)
  t.equal(metrics.headers.get('cache-control'), 'no-store', 'as on the API, metrics and probes are stored by no cache')
  t.equal((await call('/health/ready')).headers.get('cache-control'), 'no-store')
  t.equal((await call('/metrics', { headers: { authorization: 'Bearer bop_not-the-key-at-all-no' } })).status, 403)

  const posted = await call('/health/live', { method: 'POST', headers: { 'x-request-id': 'probe-9' } })
  t.equal(posted.status, 405)
  t.equal(posted.headers.get('allow'), 'GET, HEAD')
  t.match(posted.headers.get('content-type'), /^application\/problem\+json/)
  t.match(await posted.json(), { status: 405, title: 'Method Not Allowed', detail: /POST is not allowed/, requestId: 'probe-9' })
})

t.test('the worker listener answers a CONNECT with 405 and closes, instead of dropping it', async (t) => {
  const database = await createTestDatabase()
  const server = await listen(t, database.db, () => database.drop())
  const { port } = new URL(server.address)
  const text = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n'))
    let received = ''
    socket.on('data', (chunk) => (received += chunk.toString()))
    socket.on('error', reject)
    socket.on('close', () => resolve(received))
    socket.setTimeout(5000, () => socket.destroy())
  })
  t.match(text, /^HTTP\/1.1 405 Method Not Allowed\r\n/)
  t.match(text, /content-type: application\/problem\+json/i)
  t.match(JSON.parse(text.split('\r\n\r\n')[1] ?? ''), { status: 405, detail: /not a proxy/, requestId: String })
  t.equal((await fetch(`${server.address}/health/live`)).status, 200, 'the listener still answers')
})

t.test('the worker listener answers what Node refuses before a route runs as problems, as the API does', async (t) => {
  const database = await createTestDatabase()
  const server = await listen(t, database.db, () => database.drop())
  const { port } = new URL(server.address)
  const raw = (request: string) => new Promise<string>((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write(request))
    let received = ''
    socket.on('data', (chunk) => (received += chunk.toString()))
    socket.on('error', reject)
    socket.on('close', () => resolve(received))
    socket.setTimeout(5000, () => socket.destroy())
  })
  const cases: [string, number, RegExp][] = [
    ['NOT HTTP AT ALL\r\n\r\n', 400, /not valid HTTP\/1.1/],
    [`GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`, 431, /larger than 16 KiB/],
    ['GET /health/live HTTP/1.1\r\nHost: x\r\nExpect: x\r\nConnection: close\r\n\r\n', 417, /Expect: x cannot be met/],
    ['GET /health/live HTTP/1.1\r\nConnection: close\r\n\r\n', 400, /must carry a Host header/],
    ['GET /health/live HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n', 400, /carries 2 Host headers/],
    ['GET /health/live HTTP/1.1\r\nHost: a/b\r\nConnection: close\r\n\r\n', 400, /The Host header is not a host name/]
  ]
  for (const [request, status, detail] of cases) {
    const text = await raw(request)
    const [head = '', body = ''] = text.split('\r\n\r\n')
    t.match(head, new RegExp(`^HTTP/1.1 ${status} `), `${request.slice(0, 40)}: ${head.split('\r\n')[0]}`)
    t.match(head, /content-type: application\/problem\+json/i)
    t.match(JSON.parse(body), { status, detail, requestId: String })
  }
  const old = await raw('GET /health/live HTTP/1.0\r\n\r\n')
  t.match(old, /^HTTP\/1.1 200 /, 'HTTP/1.0 needs no Host')
  // The absolute form, which a server must accept (RFC 9112 3.2.2), as the API's router does.
  for (const target of ['http://x/health/live', 'HTTP://x:80/health/ready?x=1', 'http://x']) {
    const text = await raw(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
    t.match(text, target === 'http://x' ? /^HTTP\/1.1 404 [^]*"instance":"\/"/ : /^HTTP\/1.1 200 /, target)
  }
  // Only an http(s) URL names a path here: another scheme's is no target of this server's.
  t.match(await raw('GET ftp://x/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1.1 404 /, 'ftp://x/health/live is not /health/live')
})

t.test('the worker is not ready while its database does not answer', async (t) => {
  const database = openPostgres(databaseUrl('baton_no_such_database'), { poolMax: 1 })
  const server = await listen(t, database.db, () => database.close())
  t.equal((await fetch(`${server.address}/health/live`)).status, 200, 'alive all the same')
  const ready = await fetch(`${server.address}/health/ready`)
  t.equal(ready.status, 503)
  t.ok(ready.headers.get('retry-after'))
  t.match(await ready.json(), { status: 503, detail: /database/, instance: '/health/ready', requestId: String })
})
