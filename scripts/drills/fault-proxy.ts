// A TCP proxy between Baton and Postgres that injects faults on command, so drills and tests can
// break the database's connections without touching the shared server: cut every connection,
// refuse new ones, hold traffic as a frozen server would, or drop it as a network partition does.
import net from 'node:net'

// The server's CommandComplete message for a COMMIT: 'C', length 11, "COMMIT\0".
const COMMIT_COMPLETE = Buffer.from([0x43, 0, 0, 0, 11, ...Buffer.from('COMMIT'), 0])
// The server's ReadyForQuery outside a transaction: 'Z', length 5, status 'I'. After a statement that
// ran on its own, it follows that statement's commit.
const READY_IDLE = Buffer.from([0x5a, 0, 0, 0, 5, 0x49])

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
  /**
   * While on, a black hole: every connection open now, and every one made meanwhile, passes nothing more
   * in either direction, for good. Its sockets stay open, no RST, no FIN (a client's own FIN goes
   * unanswered), as behind a firewall or NAT that dropped the connection's state. Off: new connections
   * pass again; those lost stay lost until their client closes them.
   */
  blackHole(on: boolean): void
  /**
   * The next COMMIT to complete reaches the client, then every connection is cut and new ones refused
   * for `refuseMs`. With `statement`, the next time the connection that ran a statement whose text
   * matches it is idle again: that statement's commit when it ran alone, else its transaction's end
   * (a test checks that the write committed). With `loseAnswer`, the commit's answer never reaches the
   * client: the write committed, and the client cannot know it.
   */
  cutAfterNextCommit(refuseMs: number, statement?: RegExp, options?: { loseAnswer?: boolean }): Promise<void>
  /**
   * Records the statements clients run from now on, until the returned function is called, which
   * answers them in order: each with its connection's round trip (a count of its Syncs, a simple
   * query's own included), so statements that went out together share one.
   */
  record(): () => { text: string; roundTrip: number }[]
  /** Resolves when a client next sends a statement whose text matches. */
  nextStatement(statement: RegExp): Promise<void>
  close(): Promise<void>
}

export async function startFaultProxy(target: { host: string; port: number }): Promise<FaultProxy> {
  const pairs = new Set<{ client: net.Socket; server: net.Socket; ranWatched: boolean; lost: boolean }>()
  /** Connections taken while the black hole was on: never forwarded. */
  const swallowed = new Set<net.Socket>()
  let hanging = false
  let blackHole = false
  let afterCommit: (() => void) | undefined
  /** The commit `afterCommit` waits for is not passed on: its connection is cut with its answer. */
  let loseAnswer = false
  /** The statement whose transaction's commit `afterCommit` waits for (none: any COMMIT). */
  let watched: RegExp | undefined
  const held: (() => void)[] = []
  let recorded: { text: string; roundTrip: number }[] | undefined
  const awaited = new Set<{ statement: RegExp; sent: () => void }>()

  const accept = (client: net.Socket) => {
    if (blackHole) {
      swallowed.add(client)
      client.on('error', () => client.destroy()).on('close', () => swallowed.delete(client))
      client.resume()
      return
    }
    const upstream = net.connect(target.port, target.host)
    /** This connection sent the watched statement: its next return to idle is that statement's commit. */
    const pair = { client, server: upstream, ranWatched: false, lost: false }
    pairs.add(pair)
    const end = () => {
      pairs.delete(pair)
      client.destroy()
      upstream.destroy()
    }
    client.on('error', end).on('close', end)
    // A lost connection's client never hears that the server closed its end.
    const upstreamEnded = () => {
      if (pair.lost) upstream.destroy()
      else end()
    }
    upstream.on('error', upstreamEnded).on('close', upstreamEnded)
    // The server half-open (a black hole's FIN goes unanswered): otherwise a client's FIN is passed on.
    client.on('end', () => {
      if (pair.lost) return
      upstream.end()
      client.end()
    })
    const committed = (chunk: Buffer) => (watched ? pair.ranWatched && chunk.includes(READY_IDLE) : chunk.includes(COMMIT_COMPLETE))
    const readStatements = statementReader((text, roundTrip) => {
      recorded?.push({ text, roundTrip })
      for (const waiter of awaited) {
        if (!waiter.statement.test(text)) continue
        awaited.delete(waiter)
        waiter.sent()
      }
      if (watched && afterCommit && watched.test(text)) pair.ranWatched = true
    })
    const forward = (from: net.Socket, to: net.Socket, watchCommit: boolean) => from.on('data', (chunk: Buffer) => {
      if (pair.lost) return
      const send = () => {
        if (pair.lost) return
        if (watchCommit && afterCommit && loseAnswer && committed(chunk)) {
          const fault = afterCommit
          afterCommit = undefined
          return fault()
        }
        to.write(chunk)
        if (!watchCommit) readStatements(chunk)
        if (watchCommit && afterCommit && committed(chunk)) {
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
  let server = net.createServer({ allowHalfOpen: true }, accept)
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
      for (const socket of [...swallowed]) socket.destroy()
      swallowed.clear()
    },
    async refuse(on) {
      // close() stops listening at once; its callback would wait for the open connections to end.
      if (on && server.listening) server.close()
      if (!on && !server.listening) {
        server = net.createServer({ allowHalfOpen: true }, accept)
        port = await listen(server, port)
      }
    },
    hang(on) {
      hanging = on
      if (!on) for (const send of held.splice(0)) send()
    },
    blackHole(on) {
      blackHole = on
      if (on) for (const pair of pairs) pair.lost = true
    },
    cutAfterNextCommit(refuseMs, statement, options = {}) {
      watched = statement
      loseAnswer = options.loseAnswer === true
      for (const pair of pairs) pair.ranWatched = false
      return new Promise((resolve) => {
        let done = false
        afterCommit = () => {
          if (done) return
          done = true
          watched = undefined
          proxy.cutAll()
          void proxy.refuse(true).then(() => setTimeout(() => void proxy.refuse(false).then(resolve), refuseMs))
        }
      })
    },
    record() {
      const statements: { text: string; roundTrip: number }[] = []
      recorded = statements
      return () => {
        if (recorded === statements) recorded = undefined
        return statements
      }
    },
    nextStatement(statement) {
      return new Promise((sent) => awaited.add({ statement, sent }))
    },
    async close() {
      if (server.listening) server.close()
      proxy.cutAll()
    }
  }
  return proxy
}

/**
 * Reads the client's side of a connection as it passes and calls `ran` with the text of each statement
 * it runs: a simple query, or an extended query's Bind, whose statement's text came with its Parse
 * (a named prepared statement is parsed once per connection and bound by name after that). With it
 * comes the round trip it belongs to: Syncs and simple queries so far, so statements that go out
 * together before one Sync share it.
 */
function statementReader(ran: (text: string, roundTrip: number) => void): (chunk: Buffer) => void {
  const prepared = new Map<string, string>()
  let pending: Buffer = Buffer.alloc(0)
  let started = false
  let roundTrip = 1
  /** Encrypted traffic, or bytes that do not frame as messages: nothing more is read. */
  let blind = false
  const MAX_MESSAGE = 64 * 1024 * 1024
  const cstrings = (body: Buffer, count: number) => {
    const strings: string[] = []
    for (let at = 0; strings.length < count; ) {
      const end = body.indexOf(0, at)
      if (end < 0) break
      strings.push(body.toString('utf8', at, end))
      at = end + 1
    }
    return strings
  }
  const stopReading = () => {
    blind = true
    pending = Buffer.alloc(0)
  }
  const framed = (length: number, least: number) => {
    if (length >= least && length <= MAX_MESSAGE) return true
    stopReading()
    return false
  }
  return (chunk) => {
    if (blind) return
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
    for (;;) {
      if (!started) {
        // The startup message (or a cancel request): a length, a code, no type byte. After an SSL or
        // GSS request the rest may be encrypted, so reading stops there.
        if (pending.length < 8 || !framed(pending.readInt32BE(0), 8) || pending.length < pending.readInt32BE(0)) return
        const code = pending.readInt32BE(4)
        if (code === 80877103 || code === 80877104) return stopReading()
        started = true
        pending = pending.subarray(pending.readInt32BE(0))
        continue
      }
      if (pending.length < 5 || !framed(pending.readInt32BE(1), 4) || pending.length < 1 + pending.readInt32BE(1)) return
      const type = String.fromCharCode(pending[0]!)
      const body = pending.subarray(5, 1 + pending.readInt32BE(1))
      pending = pending.subarray(1 + pending.readInt32BE(1))
      if (type === 'Q') ran(cstrings(body, 1)[0] ?? '', roundTrip++)
      else if (type === 'S') roundTrip++
      else if (type === 'P') {
        const [name = '', text = ''] = cstrings(body, 2)
        prepared.set(name, text)
      } else if (type === 'B') ran(prepared.get(cstrings(body, 2)[1] ?? '') ?? '', roundTrip)
    }
  }
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
