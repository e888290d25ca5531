// The client over https, against real https servers on 127.0.0.1 whose certificates are made for this
// file (test/helpers/tls.ts): what it refuses, and that what it does over http it does over TLS too.
import http from 'node:http'
import https from 'node:https'
import net, { type AddressInfo } from 'node:net'
import tls from 'node:tls'
import { pathToFileURL } from 'node:url'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import t, { type Test } from 'tap'
import { parseAllowedTargets } from '../../src/adapters/address-policy.js'
import { createHttpClient, HttpCallError, TARGET_REFUSED, type HttpClient, type HttpClientOptions } from '../../src/adapters/http-client.js'
import { decide } from '../../src/scheduler/retry-policy.js'
import { ROOT, runCommand, TS_LOADER } from '../helpers/process.js'
import { makeCertificates, type KeyPair } from '../helpers/tls.js'
import { rawConnections } from '../helpers/raw-connections.js'

const certs = await makeCertificates(t)

function client(t: Test, options: Partial<HttpClientOptions> = {}): HttpClient {
  const c = createHttpClient({ maxBodyBytes: 1024, maxSockets: 32, userAgent: 'Baton/test', allowPrivateNetworks: true, ...options })
  t.teardown(() => c.close())
  return c
}

/** A client that trusts the file's CA, as NODE_EXTRA_CA_CERTS would make a worker trust it. */
const trusting = (t: Test, options: Partial<HttpClientOptions> = {}) => client(t, { ca: [certs.ca], ...options })

const get = (url: string, timeoutMs = 5000) => ({ method: 'GET' as const, url, headers: {}, timeoutMs })
const failure = (pending: Promise<unknown>) => pending.then(() => undefined, (e: unknown) => e as HttpCallError)

/** An https server on 127.0.0.1 with this key pair; notes each request, the name it was asked for (SNI) and each handshake. */
async function httpsServer(t: Test, pair: KeyPair, handler: http.RequestListener = (_req, res) => res.end('ok')) {
  const state = { requests: 0, handshakes: 0, servernames: [] as (string | false | null)[], ports: new Set<number>() }
  const server = https.createServer({ ...pair }, (req, res) => {
    state.requests += 1
    state.servernames.push((req.socket as tls.TLSSocket).servername)
    state.ports.add(req.socket.remotePort ?? 0)
    req.resume()
    handler(req, res)
  })
  server.on('secureConnection', () => (state.handshakes += 1))
  server.on('tlsClientError', () => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  const port = (server.address() as AddressInfo).port
  return { state, port, url: `https://127.0.0.1:${port}/hook` }
}

/** A TCP server on 127.0.0.1 that hands each connection to `connected` and notes how many are open (test/helpers/raw-connections.ts). */
async function tcpServer(t: Test, connected: (socket: net.Socket) => void) {
  const { port, state } = await rawConnections(t, connected)
  return { state, url: `https://127.0.0.1:${port}/hook` }
}

async function until(check: () => boolean, timeoutMs = 2000): Promise<boolean> {
  for (const end = Date.now() + timeoutMs; !check() && Date.now() < end;) await new Promise((resolve) => setTimeout(resolve, 10))
  return check()
}

t.test('a certificate the client does not trust, an expired one or one for another name is refused, and the request is never sent', async (t) => {
  const cases: [string, KeyPair, boolean, RegExp, RegExp][] = [
    ['self-signed', certs.selfSigned, true, /^DEPTH_ZERO_SELF_SIGNED_CERT$/,
      /^the TLS certificate of 127\.0\.0\.1 was refused, nothing was sent: self-signed certificate \(not issued by a certificate authority this worker trusts\)$/],
    ['issued by a CA the worker does not know', certs.good, false, /^UNABLE_TO_VERIFY_LEAF_SIGNATURE$/,
      /^the TLS certificate of 127\.0\.0\.1 was refused, nothing was sent: unable to verify the first certificate \(not issued by a certificate authority this worker trusts\)$/],
    ['expired', certs.expired, true, /^CERT_HAS_EXPIRED$/,
      /^the TLS certificate of 127\.0\.0\.1 was refused, nothing was sent: certificate has expired$/],
    ['for another name', certs.otherName, true, /^ERR_TLS_CERT_ALTNAME_INVALID$/,
      /^the TLS certificate of 127\.0\.0\.1 was refused, nothing was sent: it is not for that name \(IP: 127\.0\.0\.1 is not in the cert's list: ?\)$/]
  ]
  for (const [what, pair, trusted, code, message] of cases) {
    const server = await httpsServer(t, pair)
    const error = await failure((trusted ? trusting(t) : client(t)).send(get(server.url)))
    t.ok(error instanceof HttpCallError, `${what}: an HttpCallError`)
    t.match(error, { code, message, targetRefused: false }, `${what}: the error says what was wrong`)
    t.equal(server.state.requests, 0, `${what}: the server never saw the request`)
    t.match(decide({ kind: 'error', error: `${error?.code}: ${error?.message}` }, 1, new Date()), { action: 'retry' },
      `${what}: retried like a network error (a certificate may be renewed, a CA trusted)`)
  }
  const other = await httpsServer(t, certs.otherName)
  t.match(await failure(trusting(t).send(get(`https://localhost:${other.port}/hook`))), {
    code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    message: 'the TLS certificate of localhost was refused, nothing was sent: it is not for that name (Host: localhost. is not in the cert\'s altnames: DNS:other.example)'
  }, 'by name, the names the certificate has')
  t.equal(other.state.requests, 0)
})

t.test('the name checked and sent (SNI) is the URL\'s host name, not the address the guarded lookup chose', async (t) => {
  // byName is for the name localhost only: the address 127.0.0.1 it resolves to is not in it.
  const server = await httpsServer(t, certs.byName, (req, res) => res.end(`for ${(req.socket as tls.TLSSocket).servername}`))
  const byRange = trusting(t, { allowPrivateNetworks: false, allowedTargets: parseAllowedTargets('127.0.0.1/32') })
  t.match(await byRange.send(get(`https://localhost:${server.port}/hook`)), { status: 200, body: 'for localhost' }, 'through the guarded lookup')
  const byHost = trusting(t, { allowPrivateNetworks: false, allowedTargets: parseAllowedTargets('localhost') })
  t.match(await byHost.send(get(`https://localhost:${server.port}/hook`)), { status: 200, body: 'for localhost' }, 'through an allowed host name')
  t.match(await failure(byRange.send(get(`https://127.0.0.1:${server.port}/hook`))), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' },
    'the same server by its address is refused: the certificate does not name it')
  t.same(server.state.servernames, ['localhost', 'localhost'])
  t.match(await failure(trusting(t, { allowPrivateNetworks: false }).send(get(`https://localhost:${server.port}/hook`))),
    { code: TARGET_REFUSED, message: 'target localhost resolves to a private or reserved address' }, 'and the guard holds over https')
  t.equal(server.state.requests, 2)
})

t.test('calls over https reuse one kept-alive TLS connection', async (t) => {
  const server = await httpsServer(t, certs.good)
  const http = trusting(t)
  for (let i = 0; i < 5; i++) t.match(await http.send(get(`https://localhost:${server.port}/hook`)), { status: 200, body: 'ok' })
  t.equal(server.state.ports.size, 1, 'five calls, one connection')
  t.equal(server.state.handshakes, 1, 'one handshake')
})

t.test('a kept-alive TLS connection the server closes as the next request goes out: the request is sent again at once on a new one', async (t) => {
  // destroy: the TCP connection goes without a word; end: TLS close_notify first, as a server closing idle connections sends.
  for (const drop of ['destroy', 'end'] as const) {
    const seen: string[] = []
    let connections = 0
    const server = tls.createServer({ ...certs.good }, (socket) => {
      const connection = ++connections
      let requests = 0
      socket.on('error', () => {})
      socket.on('data', () => {
        seen.push(`${connection}.${++requests}`)
        if (requests === 1) socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
        else socket[drop]()
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const url = `https://localhost:${(server.address() as AddressInfo).port}/hook`
    const http = trusting(t)
    t.match(await http.send(get(url)), { status: 200, body: 'ok' }, `${drop}: the first call opens the connection`)
    t.match(await http.send(get(url)), { status: 200, body: 'ok' }, `${drop}: the second call is answered`)
    t.same(seen, ['1.1', '1.2', '2.1'], `${drop}: dropped on the kept-alive connection, answered on a new one`)
  }
})

t.test('a TLS handshake that hangs or breaks ends the call: by its timer, the socket freed, the pool not held', async (t) => {
  const hanging = await tcpServer(t, (socket) => socket.resume())
  // One socket at most: a socket the timed-out call kept would leave the next call waiting for it.
  const c = trusting(t, { maxSockets: 1 })
  for (const attempt of [1, 2]) {
    const started = Date.now()
    t.match(await failure(c.send(get(hanging.url, 200))), { code: 'ETIMEDOUT', message: 'no response within 200 ms' }, `call ${attempt}: the timer ends it`)
    t.ok(Date.now() - started < 1000, `call ${attempt}: at its timeout`)
    t.ok(await until(() => hanging.state.open === 0), `call ${attempt}: its connection is closed`)
  }
  t.equal(hanging.state.accepted, 2, 'each call had a connection')

  const closing = await tcpServer(t, (socket) => socket.destroy())
  t.match(await failure(c.send(get(closing.url, 2000))), {
    code: 'ECONNRESET', message: 'Client network socket disconnected before secure TLS connection was established'
  }, 'a server that closes during the handshake fails the call at once')

  // An https URL on a port that speaks plain http: its answer to the handshake is not TLS.
  const plain = http.createServer((_req, res) => res.end('plain'))
  await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    plain.closeAllConnections()
    await new Promise<void>((resolve) => plain.close(() => resolve()))
  })
  const wrong = await failure(c.send(get(`https://127.0.0.1:${(plain.address() as AddressInfo).port}/hook`, 2000)))
  t.match(wrong, {
    code: 'EPROTO',
    message: 'the TLS handshake with 127.0.0.1 failed: wrong version number (the port may serve plain http, not https)'
  }, 'the handshake\'s failure in words, without OpenSSL\'s internals')
})

t.test('over https too: a redirect is not followed, gzip is decoded, a body over the cap is cut', async (t) => {
  const seen: string[] = []
  const server = await httpsServer(t, certs.good, (req, res) => {
    seen.push(req.url ?? '')
    if (req.url === '/moved') res.writeHead(301, { location: 'http://127.0.0.1:1/elsewhere' }).end('moved')
    else if (req.url === '/found') res.writeHead(302, { location: '/elsewhere' }).end('found')
    else if (req.url === '/gzip') res.writeHead(200, { 'content-encoding': 'gzip' }).end(gzipSync('z'.repeat(100_000)))
    else if (req.url === '/big') res.end('b'.repeat(100_000))
    else res.end('followed')
  })
  const http = trusting(t)
  const base = `https://localhost:${server.port}`
  t.match(await http.send(get(`${base}/moved`)), { status: 301, body: 'moved', headers: { location: 'http://127.0.0.1:1/elsewhere' } })
  t.match(await http.send(get(`${base}/found`)), { status: 302, body: 'found' })
  t.same(seen, ['/moved', '/found'], 'neither redirect was followed')
  t.match(await http.send(get(`${base}/gzip`)), { status: 200, truncated: true, body: 'z'.repeat(1024) }, 'decoded, then capped')
  t.match(await http.send(get(`${base}/big`)), { status: 200, truncated: true, body: 'b'.repeat(1024) })
  t.match(await http.send(get(`${base}/hook`)), { status: 200, body: 'followed' }, 'and the client goes on after a cut body')
})

t.test('NODE_EXTRA_CA_CERTS makes a worker\'s client trust a private CA, with no option of Baton\'s', async (t) => {
  const server = await httpsServer(t, certs.good)
  const module = pathToFileURL(join(ROOT, 'src', 'adapters', 'http-client.ts')).href
  const script = `import { createHttpClient } from ${JSON.stringify(module)}
const http = createHttpClient({ maxBodyBytes: 1024, maxSockets: 1, userAgent: 'Baton/test', allowPrivateNetworks: true })
const result = await http.send({ method: 'GET', url: process.argv[1], headers: {}, timeoutMs: 5000 }).then((r) => r.status + ' ' + r.body, (e) => e.code)
http.close()
console.log('result: ' + result)`
  const run = (env: Record<string, string>) => {
    const child = runCommand(process.execPath, [TS_LOADER, '--input-type=module', '-e', script, `https://localhost:${server.port}/hook`], env)
    return child.waitFor(/result: (.*)/, 20_000).then((match) => match[1])
  }
  const [trusted, untrusted] = await Promise.all([run({ NODE_EXTRA_CA_CERTS: certs.caFile }), run({ NODE_EXTRA_CA_CERTS: '' })])
  t.equal(trusted, '200 ok', 'trusted with the CA\'s file')
  t.equal(untrusted, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'refused without it')
})
