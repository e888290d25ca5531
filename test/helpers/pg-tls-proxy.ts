// A Postgres server that speaks TLS, for tests, in front of the local one (which has ssl off and whose
// configuration the tests leave alone): it answers a client's SSLRequest itself, ends TLS with a
// certificate made at test time (test/helpers/tls.ts), and passes the plaintext on to the real server.
// With `answer: 'N'` it is a server without TLS, as Postgres with ssl=off answers.
import net from 'node:net'
import tls from 'node:tls'
import type { KeyPair } from './tls.js'

/** The SSLRequest: length 8, then the code 80877103 (1234 << 16 | 5679). */
const SSL_REQUEST_CODE = 80877103

export interface PgTlsProxy {
  readonly port: number
  /** `databaseUrl` with its host replaced by `host` (127.0.0.1 unless given) and its port by the proxy's. */
  url(databaseUrl: string, host?: string): string
  /** Connections whose TLS handshake completed. */
  readonly encrypted: number
  /** Connections that asked for TLS and got 'N', or whose handshake failed, or that never asked. */
  readonly refused: number
  /** The parameters of each startup message the proxy passed on (over TLS or not), e.g. `options`. */
  readonly startups: Record<string, string>[]
  close(): Promise<void>
}

export interface PgTlsProxyOptions {
  /** 'S': takes TLS with `pair`; 'N': a server without TLS. */
  answer: 'S' | 'N'
  pair?: KeyPair
  target?: { host: string; port: number }
}

export async function startPgTlsProxy(options: PgTlsProxyOptions): Promise<PgTlsProxy> {
  const target = options.target ?? { host: '127.0.0.1', port: 5432 }
  const open = new Set<net.Socket>()
  const startups: Record<string, string>[] = []
  let encrypted = 0
  let refused = 0

  /** Passes `client`'s bytes (`first` already read) on to the server and back, reading the startup message on the way. */
  const relay = (client: net.Socket, first: Buffer) => {
    const upstream = net.connect(target.port, target.host)
    open.add(upstream)
    const end = () => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', end)
    upstream.on('error', end)
    client.on('close', end)
    upstream.on('close', end)
    let head = Buffer.alloc(0)
    const readStartup = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk])
      if (head.length < 8 || head.length < head.readUInt32BE(0)) return
      client.off('data', readStartup)
      startups.push(startupParameters(head.subarray(0, head.readUInt32BE(0))))
      upstream.write(head)
      client.pipe(upstream)
    }
    client.on('data', readStartup)
    if (first.length > 0) readStartup(first)
    upstream.pipe(client)
  }

  const server = net.createServer((socket) => {
    open.add(socket)
    socket.on('error', () => socket.destroy())
    let got = Buffer.alloc(0)
    const onData = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk])
      if (got.length < 8) return
      socket.off('data', onData)
      const askedTls = got.readUInt32BE(0) === 8 && got.readUInt32BE(4) === SSL_REQUEST_CODE
      if (!askedTls) {
        refused += 1 // a client that never asked for TLS: plaintext, as a server with TLS also takes
        return relay(socket, got)
      }
      if (options.answer === 'N') {
        refused += 1
        socket.write('N')
        return relay(socket, got.subarray(8))
      }
      socket.write('S')
      const secure = new tls.TLSSocket(socket, { isServer: true, key: options.pair!.key, cert: options.pair!.cert })
      open.add(secure)
      secure.on('error', () => {
        refused += 1
        secure.destroy()
        socket.destroy()
      })
      secure.once('secure', () => {
        encrypted += 1
        relay(secure, Buffer.alloc(0))
      })
    }
    socket.on('data', onData)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  return {
    port,
    url(databaseUrl, host = '127.0.0.1') {
      const url = new URL(databaseUrl)
      url.hostname = host
      url.port = String(port)
      return url.toString()
    },
    get encrypted() { return encrypted },
    get refused() { return refused },
    startups,
    close: () => new Promise<void>((resolve) => {
      for (const socket of open) socket.destroy()
      server.close(() => resolve())
    })
  }
}

/** A startup message's parameters: after its length and protocol version, name and value pairs each ended by a zero byte. */
function startupParameters(message: Buffer): Record<string, string> {
  const parts = message.subarray(8).toString('utf8').split('\0')
  const parameters: Record<string, string> = {}
  for (let i = 0; i + 1 < parts.length && parts[i] !== ''; i += 2) parameters[parts[i]!] = parts[i + 1]!
  return parameters
}
