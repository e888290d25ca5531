import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import { brotliCompressSync, createGzip, deflateRawSync, deflateSync, gzipSync } from 'node:zlib'
import t, { type Test } from 'tap'
import { forbiddenRange, parseAllowedTargets } from '../../src/adapters/address-policy.js'
import { createHttpClient, HttpCallError, TARGET_NO_ADDRESS, TARGET_REFUSED, type HttpClient, type HttpClientOptions } from '../../src/adapters/http-client.js'
import { decide } from '../../src/scheduler/retry-policy.js'
import { streamLargeBody, TEN_MIB } from '../helpers/provider.js'
import { rawConnections } from '../helpers/raw-connections.js'

/** A server on 127.0.0.1 that answers "ok" and counts requests. */
async function startServer(t: Test) {
  const state = { seen: 0 }
  const base = await listen(t, (req, res) => {
    state.seen += 1
    req.resume()
    res.end('ok')
  })
  return { state, port: Number(new URL(base).port), url: `${base}/hook` }
}

function client(t: Test, options: Partial<HttpClientOptions> = {}): HttpClient {
  const c = createHttpClient({ maxBodyBytes: 1024, maxSockets: 32, userAgent: 'Baton/test', ...options })
  t.teardown(() => c.close())
  return c
}

const get = (url: string, extra: { timeoutMs?: number } = {}) =>
  ({ method: 'GET' as const, url, headers: {}, timeoutMs: 5000, ...extra })

t.test('private targets are refused by default, before any request is made', async (t) => {
  const server = await startServer(t)
  const http = client(t)
  const cases: [string, RegExp][] = [
    [server.url, /^target address 127\.0\.0\.1 is a loopback address$/],
    [`http://localhost:${server.port}/hook`, /^target localhost resolves to a private or reserved address$/],
    [`http://[::1]:${server.port}/hook`, /^target address ::1 is a loopback address$/],
    [`http://[::ffff:127.0.0.1]:${server.port}/hook`, /^target address ::ffff:7f00:1 is a loopback address$/],
    [`http://0x7f.1:${server.port}/hook`, /^target address 127\.0\.0\.1 is a loopback address$/],
    ['http://169.254.169.254/latest/meta-data/', /^target address 169\.254\.169\.254 is a cloud metadata address$/],
    ['https://10.0.0.5/hook', /^target address 10\.0\.0\.5 is in a private network range$/],
    ['ftp://provider.example/hook', /^scheme ftp is not allowed; only http and https$/],
    ['file:///etc/passwd', /^scheme file is not allowed/],
    ['not a url', /^the target URL is not valid$/]
  ]
  for (const [url, message] of cases) {
    const error = await http.send(get(url)).then(() => undefined, (e: unknown) => e)
    t.ok(error instanceof HttpCallError, `${url}: an HttpCallError`)
    t.match(error, { code: TARGET_REFUSED, targetRefused: true, message }, url)
  }
  const byName = await http.send(get(`http://localhost:${server.port}/hook`)).then(() => undefined, (e: unknown) => e)
  t.match(byName, { detail: /^(127\.0\.0\.1|::1), which is a loopback address$/ }, 'the address a name resolved to is kept apart, for the operator\'s log')
  t.equal(server.state.seen, 0, 'the server saw no request')
})

t.test('a tenant\'s host name that does not resolve reads as one that resolves to a forbidden address, and both are retried', async (t) => {
  const server = await startServer(t)
  const http = client(t)
  const failure = (url: string, tenantTarget: boolean) => http.send({ ...get(url), tenantTarget }).then(() => undefined, (e: unknown) => e as HttpCallError)
  // localhost resolves to loopback; a name under .invalid never resolves (RFC 6761).
  const loopback = await failure(`http://localhost:${server.port}/hook`, true)
  const missing = await failure(`http://baton-test.invalid:${server.port}/hook`, true)
  const said = (host: string) => `target host ${host} has no address Baton may call (it does not resolve, or only to private or reserved addresses)`
  t.match(loopback, { code: TARGET_NO_ADDRESS, message: said('localhost'), targetRefused: false })
  t.match(missing, { code: TARGET_NO_ADDRESS, message: said('baton-test.invalid'), targetRefused: false })
  t.equal(loopback?.message.replace('localhost', 'NAME'), missing?.message.replace('baton-test.invalid', 'NAME'), 'the same words but for the name')
  const now = new Date()
  for (const error of [loopback, missing]) {
    t.match(decide({ kind: error?.targetRefused ? 'refused' : 'error', error: String(error?.message) }, 1, now), { action: 'retry' }, 'retried like a network error')
  }
  t.match(loopback, { detail: /^(127\.0\.0\.1|::1), which is a loopback address$/ }, 'the operator\'s log keeps the address')
  t.match(missing, { detail: /^no address \(getaddrinfo (ENOTFOUND|EAI_AGAIN) baton-test\.invalid\)$/ }, 'and that the name did not resolve')

  // A marketplace service's host name, which only the operator sets, keeps the precise reasons.
  t.match(await failure(`http://localhost:${server.port}/hook`, false), { code: TARGET_REFUSED, message: /^target localhost resolves to a private or reserved address$/ })
  t.match(await failure(`http://baton-test.invalid:${server.port}/hook`, false), { code: /^(ENOTFOUND|EAI_AGAIN)$/, message: /baton-test\.invalid/, detail: undefined })
  // A literal address is the tenant's own knowledge and is named.
  t.match(await failure(server.url, true), { code: TARGET_REFUSED, message: /^target address 127\.0\.0\.1 is a loopback address$/ })
  t.equal(server.state.seen, 0, 'the server saw no request')
})

t.test('allowPrivateNetworks lets calls reach this machine', async (t) => {
  const server = await startServer(t)
  const http = client(t, { allowPrivateNetworks: true })
  t.match(await http.send(get(server.url)), { status: 200, body: 'ok', truncated: false })
  t.match(await http.send(get(`http://localhost:${server.port}/hook`)), { status: 200, body: 'ok' })
  t.equal(server.state.seen, 2)
  const error = await http.send(get('ftp://127.0.0.1/hook')).catch((e: unknown) => e)
  t.match(error, { code: TARGET_REFUSED }, 'the scheme rule still holds')
})

t.test('a refused target gives up at once instead of retrying', async (t) => {
  const decision = decide({ kind: 'refused', error: `${TARGET_REFUSED}: target address 10.0.0.5 is in a private network range` }, 1, new Date())
  t.match(decision, { action: 'give-up', reason: /10\.0\.0\.5 is in a private network range/ })
  t.equal(decide({ kind: 'error', error: 'ECONNREFUSED: connect ECONNREFUSED' }, 1, new Date()).action, 'retry', 'other call errors still retry')
})

t.test('address classifier', async (t) => {
  const refused: [string, RegExp][] = [
    ['10.1.2.3', /private/],
    ['172.16.0.1', /private/],
    ['172.31.255.255', /private/],
    ['192.168.1.1', /private/],
    ['127.0.0.1', /loopback/],
    ['127.255.0.9', /loopback/],
    ['::1', /loopback/],
    ['fe80::1', /link-local/],
    ['fe80::1%eth0', /link-local/],
    ['169.254.1.1', /link-local/],
    ['fc00::1', /private/],
    ['fd12:3456::1', /private/],
    ['::ffff:10.0.0.1', /private/],
    ['::ffff:a00:1', /private/],
    ['::ffff:127.0.0.1', /loopback/],
    ['::ffff:169.254.169.254', /metadata/],
    ['64:ff9b::10.0.0.1', /private/],
    ['::127.0.0.1', /loopback/],
    ['169.254.169.254', /metadata/],
    ['fd00:ec2::254', /metadata/],
    ['100.64.0.1', /carrier-grade NAT/],
    ['100.127.255.255', /carrier-grade NAT/],
    ['0.0.0.0', /unspecified/],
    ['::', /unspecified/],
    ['224.0.0.1', /multicast/],
    ['ff02::1', /multicast/],
    ['255.255.255.255', /reserved/],
    ['localhost', /not an IP address/]
  ]
  for (const [address, reason] of refused) t.match(forbiddenRange(address), reason, `${address} is refused`)
  const allowed = ['8.8.8.8', '2001:4860:4860::8888', '93.184.216.34', '172.32.0.1', '100.128.0.1', '11.0.0.1', '::ffff:8.8.8.8', '64:ff9b::8.8.8.8', '2a00:1450:4001:80b::200e']
  for (const address of allowed) t.equal(forbiddenRange(address), undefined, `${address} is allowed`)
})

t.test('WEBHOOK_ALLOWED_TARGETS lifts the guard for the listed ranges and host names only', async (t) => {
  const server = await startServer(t)
  const byRange = client(t, { allowedTargets: parseAllowedTargets('127.0.0.1/32, 192.168.0.0/16') })
  t.match(await byRange.send(get(server.url)), { status: 200 }, 'an address in an allowed range is reached')
  t.match(await byRange.send(get(`http://localhost:${server.port}/hook`)).catch((e: unknown) => e),
    { status: 200 }, 'so is a host name resolving into it (localhost is 127.0.0.1 here)')
  const stillRefused: [string, RegExp][] = [
    [`http://[::1]:${server.port}/hook`, /::1 is a loopback address/],
    ['http://10.0.0.1/hook', /10\.0\.0\.1 is in a private network range/],
    ['http://169.254.169.254/latest/meta-data/', /cloud metadata/],
    [`http://[::ffff:127.0.0.2]:${server.port}/hook`, /loopback/]
  ]
  for (const [url, message] of stillRefused) {
    t.match(await byRange.send(get(url)).catch((e: unknown) => e), { code: TARGET_REFUSED, message }, `${url} is still refused`)
  }
  t.match(await byRange.send(get(`http://[::ffff:127.0.0.1]:${server.port}/hook`)), { status: 200 }, 'an IPv4-mapped address matches its IPv4 range')

  const byName = client(t, { allowedTargets: parseAllowedTargets('LocalHost') })
  t.match(await byName.send(get(`http://localhost:${server.port}/hook`)), { status: 200 }, 'an allowed host name is reached whatever it resolves to')
  t.match(await byName.send(get(server.url)).catch((e: unknown) => e), { code: TARGET_REFUSED }, 'but not the same address under another name')
  t.equal(server.state.seen, 4)

  // A tenant's own target: none of it applies, not even through a kept-alive socket to the same host.
  for (const [allowing, url] of [[byRange, server.url], [byName, `http://localhost:${server.port}/hook`]] as const) {
    t.match(await allowing.send({ ...get(url), tenantTarget: true }).catch((e: unknown) => e),
      url === server.url ? { code: TARGET_REFUSED, message: /loopback address$/ } : { code: TARGET_NO_ADDRESS, message: /has no address Baton may call/ }, `${url} as a tenant's target`)
  }
  t.equal(server.state.seen, 4, 'no tenant\'s call reached the server')
})

t.test('parseAllowedTargets refuses what is neither a host name nor a range', async (t) => {
  t.same(parseAllowedTargets('').hosts.size, 0)
  const parsed = parseAllowedTargets('127.0.0.1, 10.0.0.0/8,fd00::/8, provider.internal, Provider-2.example.')
  t.same([...parsed.hosts], ['provider.internal', 'provider-2.example'])
  t.equal(parsed.v4.length, 2)
  t.equal(parsed.v6.length, 1)
  for (const bad of ['not a host!', '10.0.0.0/33', '10.0.0.1/8', '::1/129', '1.2.3.4/x', 'provider.internal/24', 'http://provider.internal']) {
    t.throws(() => parseAllowedTargets(bad), /neither a host name nor an IP address or CIDR range|host bits set/, bad)
  }
})

t.test('a redirect is not followed: the 3xx is the response', async (t) => {
  const seen: string[] = []
  const server = await listen(t, (req, res) => {
    seen.push(req.url ?? '')
    if (req.url === '/hook') res.writeHead(302, { location: '/elsewhere' }).end('moved')
    else res.end('followed')
  })
  const http = client(t, { allowPrivateNetworks: true })
  const response = await http.send(get(`${server}/hook`))
  t.match(response, { status: 302, body: 'moved' })
  t.equal(response.headers.location, '/elsewhere')
  t.same(seen, ['/hook'], 'the redirect target was never requested')
  t.match(decide({ kind: 'response', status: 302 }, 1, new Date()), { action: 'give-up', reason: 'HTTP 302 is not retried' })
})

t.test('a 101 switching protocols is a response like any other status, not a call left to its timeout', async (t) => {
  const server = await listen(t, (req) => {
    req.socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n')
  })
  const http = client(t, { allowPrivateNetworks: true })
  const started = Date.now()
  const response = await http.send(get(`${server}/hook`, { timeoutMs: 3000 })).catch((e: unknown) => e)
  t.match(response, { status: 101, body: '', truncated: false })
  t.ok(Date.now() - started < 1000, 'answered at once, not at the timeout')
  t.match(decide({ kind: 'response', status: 101 }, 1, new Date()), { action: 'give-up', reason: 'HTTP 101 is not retried' })
})

/** Notes whether the whole body went out before the connection closed. */
function streamTenMiB(res: http.ServerResponse, state: { completed: boolean }): void {
  res.on('close', () => (state.completed = res.writableFinished))
  streamLargeBody(res)
}

const MAX_GROWTH = 4 * 1024 * 1024

function memory(): number {
  const usage = process.memoryUsage()
  return usage.arrayBuffers + usage.heapUsed
}

t.test('a 10 MiB body is cut at the cap and the rest is never buffered', async (t) => {
  const state = { completed: true }
  const server = await listen(t, (_req, res) => streamTenMiB(res, state))
  const http = client(t, { allowPrivateNetworks: true, maxBodyBytes: 65_536 })
  const before = memory()
  const response = await http.send(get(`${server}/big`))
  const growth = memory() - before
  t.equal(response.status, 200)
  t.equal(response.truncated, true)
  t.equal(Buffer.byteLength(response.body), 65_536, 'exactly the cap is kept')
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(state.completed, false, 'the connection was closed before the server could send it all')
  t.ok(growth < MAX_GROWTH, `memory grew by ${(growth / 1048576).toFixed(2)} MiB, far less than the 10 MiB sent`)
})

t.test('a gzip body is capped after decompression', async (t) => {
  const zipped = await gzipOfRepeated('a', TEN_MIB)
  t.ok(zipped.length < 65_536, `10 MiB of "a" compress to ${zipped.length} bytes`)
  const server = await listen(t, (_req, res) => res.writeHead(200, { 'content-encoding': 'gzip' }).end(zipped))
  const http = client(t, { allowPrivateNetworks: true, maxBodyBytes: 65_536 })
  const before = memory()
  const response = await http.send(get(`${server}/bomb`))
  const growth = memory() - before
  t.match(response, { status: 200, truncated: true })
  t.equal(response.body, 'a'.repeat(65_536), 'the decompressed text, up to the cap')
  t.ok(growth < MAX_GROWTH, `memory grew by ${(growth / 1048576).toFixed(2)} MiB while 10 MiB were inflatable`)
})

t.test('a body exactly at the cap is whole, not truncated', async (t) => {
  const server = await listen(t, (_req, res) => res.end(Buffer.alloc(1024, 'y')))
  const http = client(t, { allowPrivateNetworks: true, maxBodyBytes: 1024 })
  t.match(await http.send(get(`${server}/exact`)), { status: 200, truncated: false, body: 'y'.repeat(1024) })
})

t.test('a body cut at the cap inside a character keeps the characters before it, with no U+FFFD in place of the rest', async (t) => {
  // € is three bytes: 341 of them fill 1023 bytes, and the 1024th byte is the first of the next one.
  const server = await listen(t, (_req, res) => res.end('€'.repeat(1000)))
  const http = client(t, { allowPrivateNetworks: true, maxBodyBytes: 1024 })
  const cut = await http.send(get(`${server}/euro`))
  t.match(cut, { status: 200, truncated: true })
  t.equal(cut.body, '€'.repeat(341))
  const whole = await listen(t, (_req, res) => res.end(Buffer.from([0x61, 0xe2, 0x82])))
  const broken = await http.send(get(`${whole}/broken`))
  t.match(broken, { status: 200, truncated: false })
  t.equal(broken.body, 'a\uFFFD', 'a body that ends broken as sent is read as sent')
})

t.test('a POST carries its body, length and the client\'s headers', async (t) => {
  const seen: { method?: string; headers?: http.IncomingHttpHeaders; body?: string } = {}
  const server = await listen(t, async (req, res) => {
    seen.method = req.method
    seen.headers = req.headers
    seen.body = (await buffer(req)).toString('utf8')
    res.writeHead(201, { 'x-answer': 'yes' }).end('made')
  })
  const http = client(t, { allowPrivateNetworks: true })
  const body = JSON.stringify({ name: 'Zoë' })
  const response = await http.send({ ...get(`${server}/hook`), method: 'POST', headers: { 'content-type': 'application/json' }, body })
  t.match(response, { status: 201, body: 'made', truncated: false, headers: { 'x-answer': 'yes' } })
  t.equal(seen.method, 'POST')
  t.equal(seen.body, body)
  t.match(seen.headers, {
    'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)),
    'user-agent': 'Baton/test', 'accept-encoding': 'gzip, deflate, br'
  })
})

t.test('deflate (zlib or raw) and brotli bodies are decoded; an empty or unknown encoding is kept as it came', async (t) => {
  const text = 'ünïcode '.repeat(100)
  const bodies: Record<string, [string, Buffer]> = {
    '/gzip': ['gzip', gzipSync(text)], '/deflate': ['deflate', deflateSync(text)], '/br': ['br', brotliCompressSync(text)],
    '/raw-deflate': ['deflate', deflateRawSync(text)],
    '/empty': ['gzip', Buffer.alloc(0)], '/odd': ['constructor', Buffer.from('as sent')]
  }
  const server = await listen(t, (req, res) => {
    const [encoding, body] = bodies[req.url ?? ''] ?? ['identity', Buffer.alloc(0)]
    res.writeHead(200, { 'content-encoding': encoding }).end(body)
  })
  const http = client(t, { allowPrivateNetworks: true, maxBodyBytes: 4096 })
  for (const path of ['/gzip', '/deflate', '/raw-deflate', '/br']) t.match(await http.send(get(`${server}${path}`)), { status: 200, body: text, truncated: false }, path)
  t.match(await http.send(get(`${server}/empty`)), { status: 200, body: '', truncated: false }, 'an empty body under gzip')
  t.match(await http.send(get(`${server}/odd`)), { status: 200, body: 'as sent' }, 'an encoding the client did not ask for')
})

t.test('a body that does not decode is a call error, not a response', async (t) => {
  const server = await listen(t, (_req, res) => res.writeHead(200, { 'content-encoding': 'gzip' }).end('not gzip at all'))
  const http = client(t, { allowPrivateNetworks: true })
  const error = await http.send(get(`${server}/bad`)).catch((e: unknown) => e)
  t.ok(error instanceof HttpCallError)
  t.match(error, { code: 'Z_DATA_ERROR', message: /could not be decoded/ })
})

t.test('a connection dropped in the middle of the body is a call error', async (t) => {
  const server = await listen(t, (_req, res) => {
    res.writeHead(200, { 'content-length': '1000' })
    res.write('only part of it')
    setTimeout(() => res.socket?.destroy(), 20)
  })
  const http = client(t, { allowPrivateNetworks: true })
  const error = await http.send(get(`${server}/cut`)).catch((e: unknown) => e)
  t.ok(error instanceof HttpCallError)
  t.match(error, { code: /ECONNRESET/ })
})

t.test('a response read to its declared length stands, whatever bytes follow it on the connection', async (t) => {
  // A Content-Length counted in characters, not bytes: "ë" is two bytes, so one byte is left over,
  // and node's parser fails on it as the start of a next response, after this one was read whole.
  const body = '{"value":"Zoë"}'
  const connections = new Set<net.Socket>()
  const server = await rawServer(t, (socket) => {
    connections.add(socket)
    socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`)
  })
  const http = client(t, { allowPrivateNetworks: true })
  t.match(await http.send(get(`${server}/hook`)).catch((e: unknown) => e), { status: 200, body: '{"value":"Zoë"', truncated: false })
  // The connection that carried the stray byte is dropped: the next call opens one of its own (on the
  // old one, the byte would be read as the start of its answer).
  t.match(await http.send(get(`${server}/hook`, { timeoutMs: 2000 })).catch((e: unknown) => e), { status: 200 })
  t.equal(connections.size, 2, 'a new connection for the next call')
  const zipped = gzipSync('decoded')
  const gzipped = await rawServer(t, (socket) => socket.write(Buffer.concat([
    Buffer.from(`HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: ${zipped.length}\r\n\r\n`), zipped, Buffer.from('junk')
  ])))
  t.match(await http.send(get(`${gzipped}/hook`)).catch((e: unknown) => e), { status: 200, body: 'decoded' }, 'a decoded body too')
  const cut = await rawServer(t, (socket) => socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n'))
  t.match(await http.send(get(`${cut}/hook`)).catch((e: unknown) => e), { code: 'HPE_INVALID_CHUNK_SIZE' }, 'a body that breaks before its end is still an error')
})

t.test('the timeout covers the body too, and an abort ends the call at once', async (t) => {
  const server = await listen(t, (_req, res) => {
    res.writeHead(200)
    res.write('headers, then nothing')
  })
  const http = client(t, { allowPrivateNetworks: true })
  const started = Date.now()
  const late = await http.send(get(`${server}/stall`, { timeoutMs: 150 })).catch((e: unknown) => e)
  t.match(late, { code: 'ETIMEDOUT', message: 'no response within 150 ms' })
  t.ok(Date.now() - started < 5000, 'it did not wait for the server')

  const controller = new AbortController()
  const pending = http.send({ ...get(`${server}/stall`), signal: controller.signal }).catch((e: unknown) => e)
  setTimeout(() => controller.abort(), 30)
  t.match(await pending, { code: 'ERR_ABORTED', message: 'the call was aborted' })
  t.match(await http.send({ ...get(`${server}/stall`), signal: AbortSignal.abort() }).catch((e: unknown) => e), { code: 'ERR_ABORTED' }, 'already aborted')
})

t.test('calls to one host reuse a kept-alive connection', async (t) => {
  const ports = new Set<number>()
  const server = await listen(t, (req, res) => {
    ports.add(req.socket.remotePort ?? 0)
    res.end('ok')
  })
  const http = client(t, { allowPrivateNetworks: true })
  for (let i = 0; i < 5; i++) t.equal((await http.send(get(`${server}/again`))).body, 'ok')
  t.equal(ports.size, 1, 'five calls, one connection')
})

t.test('a kept-alive connection left unused is closed, though its server would keep it forever', async (t) => {
  // As Go's net/http without an IdleTimeout: no Keep-Alive hint, idle connections never closed.
  const open = new Set<net.Socket>()
  const server = http.createServer({ keepAliveTimeout: 0 }, (req, res) => {
    req.resume()
    setTimeout(() => res.end('ok'), req.url === '/slow' ? 300 : 0)
  })
  server.keepAliveTimeout = 0
  server.on('connection', (socket: net.Socket) => {
    open.add(socket)
    socket.on('close', () => open.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const http1 = client(t, { allowPrivateNetworks: true, idleSocketMs: 100 })
  t.equal((await http1.send(get(`${base}/slow`))).body, 'ok', 'a call that waits longer than the limit for its answer still gets it')
  t.equal((await http1.send(get(`${base}/again`))).body, 'ok')
  t.equal(open.size, 1, 'one kept-alive connection')
  for (const until = Date.now() + 3000; open.size > 0 && Date.now() < until;) await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(open.size, 0, 'closed once it sat unused past the limit')
})

/** What the kept-alive server does with the nth request on its cth connection (both counted from 1). */
type Act = (connection: number, request: number) => 'answer' | 'close' | 'reset' | 'part' | 'stall' | number

/**
 * A server on 127.0.0.1 that keeps connections alive and, as `act` says, answers a request, closes or
 * resets its connection as soon as the request's bytes arrive (the race of a server dropping an idle
 * connection as the client reuses it), does so after a number of milliseconds, begins an answer and
 * drops it, or never answers. It notes every request it read, with its body.
 */
async function keptAliveServer(t: Test, act: Act) {
  const seen: { connection: number; request: number; method: string; body: string }[] = []
  let connections = 0
  const server = await rawOrigin(t, (socket) => {
    const connection = ++connections
    let requests = 0
    let pending = Buffer.alloc(0)
    socket.on('data', (data: Buffer) => {
      pending = Buffer.concat([pending, data])
      for (;;) {
        const end = pending.indexOf('\r\n\r\n')
        if (end < 0) return
        const head = pending.subarray(0, end).toString('latin1')
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
        if (pending.length < end + 4 + length) return
        const body = pending.subarray(end + 4, end + 4 + length).toString('utf8')
        pending = pending.subarray(end + 4 + length)
        const request = ++requests
        seen.push({ connection, request, method: head.split(' ')[0] ?? '', body })
        const what = act(connection, request)
        if (what === 'answer') socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
        else if (what === 'close') socket.destroy()
        else if (what === 'reset') socket.resetAndDestroy()
        else if (what === 'part') socket.end('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part')
        else if (typeof what === 'number') setTimeout(() => socket.destroy(), what)
      }
    })
  })
  return { url: `${server}/hook`, seen, connections: () => connections }
}

t.test('a request on a kept-alive connection the server closed as it went out is sent again at once on a new connection, its body too', async (t) => {
  for (const drop of ['close', 'reset'] as const) {
    // Each connection answers its first request and drops the next as soon as it arrives.
    const server = await keptAliveServer(t, (_connection, request) => (request === 1 ? 'answer' : drop))
    const http = client(t, { allowPrivateNetworks: true })
    t.match(await http.send(get(server.url)), { status: 200, body: 'ok' }, `${drop}: the first call opens the connection`)
    const body = JSON.stringify({ name: 'Zoë' })
    const post = { ...get(server.url), method: 'POST' as const, headers: { 'content-type': 'application/json' }, body }
    t.match(await http.send(post).catch((e: unknown) => e), { status: 200, body: 'ok' }, `${drop}: the second call is answered`)
    t.equal(server.connections(), 2, 'the resend opened a connection of its own')
    t.same(server.seen, [
      { connection: 1, request: 1, method: 'GET', body: '' },
      { connection: 1, request: 2, method: 'POST', body },
      { connection: 2, request: 1, method: 'POST', body }
    ], 'the dropped request and its resend carried the same body')
  }
})

t.test('a reset of a connection the call opened, of the resend, or of an answer begun fails the call as a network error, with no more resends', async (t) => {
  const http = client(t, { allowPrivateNetworks: true })
  const fresh = await keptAliveServer(t, () => 'close')
  t.match(await http.send(get(fresh.url)).catch((e: unknown) => e), { code: 'ECONNRESET', message: 'socket hang up' }, 'a new connection dropped')
  t.equal(fresh.connections(), 1, 'not sent again')

  const twice = await keptAliveServer(t, (connection, request) => (connection === 1 && request === 1 ? 'answer' : 'close'))
  t.match(await http.send(get(twice.url)), { status: 200 })
  t.match(await http.send(get(twice.url)).catch((e: unknown) => e), { code: 'ECONNRESET' }, 'the resend dropped too')
  t.equal(twice.connections(), 2, 'sent again once, no more')

  const begun = await keptAliveServer(t, (_connection, request) => (request === 1 ? 'answer' : 'part'))
  t.match(await http.send(get(begun.url)), { status: 200 })
  t.match(await http.send(get(begun.url)).catch((e: unknown) => e), { code: 'ECONNRESET' }, 'an answer cut off')
  t.equal(begun.connections(), 1, 'a call the server began to answer is not sent again')
})

t.test('a kept-alive connection that goes well after the request went out fails the call: the provider may be working on it', async (t) => {
  const late = await keptAliveServer(t, (_connection, request) => (request === 1 ? 'answer' : 700))
  const http = client(t, { allowPrivateNetworks: true })
  t.match(await http.send(get(late.url)), { status: 200 })
  t.match(await http.send(get(late.url)).catch((e: unknown) => e), { code: 'ECONNRESET' }, 'a network error, retried after its backoff')
  t.equal(late.connections(), 1, 'not sent again unseen')
})

t.test('a kept-alive connection that goes well after the request went out is not sent again when the clock was stepped back meanwhile', async (t) => {
  const wallNow = Date.now
  t.teardown(() => { Date.now = wallNow })
  const late = await keptAliveServer(t, (_connection, request) => {
    if (request === 1) return 'answer'
    // The machine's clock is stepped back a minute while the provider works on the request.
    Date.now = () => wallNow() - 60_000
    return 700
  })
  const http = client(t, { allowPrivateNetworks: true })
  t.match(await http.send(get(late.url)), { status: 200 })
  t.match(await http.send(get(late.url)).catch((e: unknown) => e), { code: 'ECONNRESET' }, 'a network error, retried after its backoff')
  t.equal(late.connections(), 1, 'not sent again unseen')
})

t.test('the one timer bounds a call with its resend, and an abort ends it', async (t) => {
  // The kept-alive connection is dropped after 300 ms, and the new one never answers: a timer of
  // the resend's own would end the call at 1000 ms, the call's own ends it at 700 ms.
  const slow = await keptAliveServer(t, (connection, request) => (request === 1 ? (connection === 1 ? 'answer' : 'stall') : 300))
  const http = client(t, { allowPrivateNetworks: true })
  t.match(await http.send(get(slow.url)), { status: 200 })
  const started = Date.now()
  t.match(await http.send(get(slow.url, { timeoutMs: 700 })).catch((e: unknown) => e), { code: 'ETIMEDOUT', message: 'no response within 700 ms' })
  const took = Date.now() - started
  t.equal(slow.connections(), 2, 'it was sent again before the timer ran out')
  t.ok(took < 1000, `ended after ${took} ms, by the call's timer`)

  const controller = new AbortController()
  const aborted = await keptAliveServer(t, (connection, request) => {
    if (request > 1) return 'close'
    if (connection === 1) return 'answer'
    controller.abort()
    return 'stall'
  })
  t.match(await http.send(get(aborted.url)), { status: 200 })
  t.match(await http.send({ ...get(aborted.url), signal: controller.signal }).catch((e: unknown) => e), { code: 'ERR_ABORTED', message: 'the call was aborted' })
  t.equal(aborted.connections(), 2, 'aborted while the resend waited for its answer')
})

async function listen(t: Test, handler: http.RequestListener): Promise<string> {
  const server = http.createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/** A server on 127.0.0.1 that writes raw bytes: `answer` gets the socket once a request's head has arrived. */
async function rawServer(t: Test, answer: (socket: net.Socket) => void): Promise<string> {
  return rawOrigin(t, (socket) => {
    let head = ''
    socket.on('data', (data: Buffer) => {
      const complete = head.includes('\r\n\r\n')
      head += data.toString('latin1')
      if (!complete && head.includes('\r\n\r\n')) answer(socket)
    })
  })
}

/** A server on 127.0.0.1 that hands each connection to `connected` (test/helpers/raw-connections.ts): its origin. */
async function rawOrigin(t: Test, connected: (socket: net.Socket) => void): Promise<string> {
  return `http://127.0.0.1:${(await rawConnections(t, connected)).port}`
}

/** gzip of `size` bytes of one character, made from one reused block so no 10 MiB buffer is ever allocated. */
function gzipOfRepeated(char: string, size: number): Promise<Buffer> {
  const block = Buffer.alloc(65_536, char)
  const blocks = function* () {
    for (let sent = 0; sent < size; sent += block.length) yield block
  }
  return buffer(Readable.from(blocks()).pipe(createGzip()))
}
