import http from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { createHttpClient, forbiddenRange, HttpCallError, TARGET_REFUSED, type HttpClient, type HttpClientOptions } from '../../src/adapters/http-client.js'
import { decide } from '../../src/scheduler/retry-policy.js'

/** A server on 127.0.0.1 that counts requests; with hold on, it answers only when released. */
async function startServer(t: Test) {
  const state = { seen: 0, open: 0, maxOpen: 0, hold: false, held: [] as http.ServerResponse[] }
  const server = http.createServer((req, res) => {
    state.seen += 1
    state.open += 1
    state.maxOpen = Math.max(state.maxOpen, state.open)
    res.on('close', () => (state.open -= 1))
    req.resume()
    if (state.hold) state.held.push(res)
    else res.end('ok')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  const port = (server.address() as AddressInfo).port
  return {
    state,
    port,
    url: `http://127.0.0.1:${port}/hook`,
    release() {
      for (const res of state.held.splice(0)) res.end('ok')
    }
  }
}

function client(t: Test, options: Partial<HttpClientOptions> = {}): HttpClient {
  const c = createHttpClient({ maxBodyBytes: 1024, maxSockets: 32, userAgent: 'Baton/test', ...options })
  t.teardown(() => c.close())
  return c
}

const get = (url: string, extra: { signal?: AbortSignal; timeoutMs?: number } = {}) =>
  ({ method: 'GET' as const, url, headers: {}, timeoutMs: 5000, ...extra })

t.test('private targets are refused by default, before any request is made', async (t) => {
  const server = await startServer(t)
  const http = client(t)
  const cases: [string, RegExp][] = [
    [server.url, /^target address 127\.0\.0\.1 is a loopback address$/],
    [`http://localhost:${server.port}/hook`, /^target localhost resolves to (127\.0\.0\.1|::1), which is a loopback address$/],
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
