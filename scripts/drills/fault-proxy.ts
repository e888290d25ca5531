// A TCP proxy between Baton and Postgres that injects faults on command, so drills and tests can
// break the database's connections without touching the shared server: cut every connection,
// refuse new ones, or hold traffic as a frozen server would.
import net from 'node:net'

// The server's CommandComplete message for a COMMIT: 'C', length 11, "COMMIT\0".
const COMMIT_COMPLETE = Buffer.from([0x43, 0, 0, 0, 11, ...Buffer.from('COMMIT'), 0])

export interface FaultProxy {
  /** The database URL with its host and port replaced by the proxy's. */
  url(databaseUrl: string): string
  readonly port: number
  /** Connections open through the proxy now. */
  readonly open: number
  /** Destroys every open connection, both sides, as a server restart or failover does. */
  cutAll(): void
  /** While on, new connections are refused (the proxy stops listening). */
  refuse(on: boolean): Promise<void>
  /** While on, traffic is held in both directions and new connections get no answer: a server that froze. */
  hang(on: boolean): void
  /** The next COMMIT to complete reaches the client, then every connection is cut and new ones refused for `refuseMs`. */
  cutAfterNextCommit(refuseMs: number): Promise<void>
  close(): Promise<void>
}

export async function startFaultProxy(target: { host: string; port: number }): Promise<FaultProxy> {
  const pairs = new Set<{ client: net.Socket; server: net.Socket }>()
  let hanging = false
  let afterCommit: (() => void) | undefined
  const held: (() => void)[] = []

  const accept = (client: net.Socket) => {
    const upstream = net.connect(target.port, target.host)
    const pair = { client, server: upstream }
    pairs.add(pair)
    const end = () => {
      pairs.delete(pair)
      client.destroy()
      upstream.destroy()
    }
    client.on('error', end).on('close', end)
    upstream.on('error', end).on('close', end)
    const forward = (from: net.Socket, to: net.Socket, watchCommit: boolean) => from.on('data', (chunk: Buffer) => {
      const send = () => {
        to.write(chunk)
        if (watchCommit && afterCommit && chunk.includes(COMMIT_COMPLETE)) {
          const fault = afterCommit
          afterCommit = undefined
          // Let the commit's answer reach the client before the connections go.
          const cut = () => setImmediate(fault)
          if (to.writableLength === 0) cut()
          else to.once('drain', cut)
        }
      }
      if (hanging) held.push(send)
      else send()
    })
    forward(client, upstream, false)
    forward(upstream, client, true)
  }
  let server = net.createServer(accept)
  let port = await listen(server, 0)

  const proxy: FaultProxy = {
    get port() {
      return port
    },
    get open() {
      return pairs.size
    },
    url(databaseUrl) {
      const url = new URL(databaseUrl)
      url.hostname = '127.0.0.1'
      url.port = String(port)
      return url.toString()
    },
    cutAll() {
      for (const pair of [...pairs]) {
        pair.client.destroy()
        pair.server.destroy()
      }
      pairs.clear()
    },
    async refuse(on) {
      // close() stops listening at once; its callback would wait for the open connections to end.
      if (on && server.listening) server.close()
      if (!on && !server.listening) {
        server = net.createServer(accept)
        port = await listen(server, port)
      }
    },
    hang(on) {
      hanging = on
      if (!on) for (const send of held.splice(0)) send()
    },
    cutAfterNextCommit(refuseMs) {
      return new Promise((resolve) => {
        let done = false
        afterCommit = () => {
          if (done) return
          done = true
          proxy.cutAll()
          void proxy.refuse(true).then(() => setTimeout(() => void proxy.refuse(false).then(resolve), refuseMs))
        }
      })
    },
    async close() {
      if (server.listening) server.close()
      proxy.cutAll()
    }
  }
  return proxy
}

function listen(server: net.Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject)
      resolve((server.address() as net.AddressInfo).port)
    })
  })
}
