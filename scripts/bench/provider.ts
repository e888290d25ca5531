// A minimal marketplace provider for the scheduler benchmark, run in its own process: it answers
// every webhook call with 200 "ok" at once and notes when each call arrived (by its deliveryId).
//
//   node --import tsx scripts/bench/provider.ts [--delay-ms=N]   → prints "listening <port>" on stdout
//
// --delay-ms makes every answer wait N ms, like a provider across a network.
//
// GET /__bench/take hands the bench the calls noted since the last take, as JSON, and forgets them.
import http from 'node:http'
import type { AddressInfo } from 'node:net'

const CONTROL = '/__bench/'

const delayMs = Number(process.argv.find((a) => a.startsWith('--delay-ms='))?.slice('--delay-ms='.length) ?? 0)

let ids: string[] = []
let times: number[] = []
let total = 0

const server = http.createServer((req, res) => {
  // Epoch milliseconds with a fraction, comparable with Date.now() of the other processes.
  const at = performance.timeOrigin + performance.now()
  const url = req.url ?? '/'
  if (url.startsWith(CONTROL)) return control(url.slice(CONTROL.length), res)
  total += 1
  const query = url.indexOf('?')
  ids.push(query < 0 ? '' : (new URLSearchParams(url.slice(query + 1)).get('deliveryId') ?? ''))
  times.push(at)
  if (delayMs > 0) setTimeout(answer, delayMs, res)
  else answer(res)
})

function answer(res: http.ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': '2' })
  res.end('ok')
}

function control(command: string, res: http.ServerResponse): void {
  if (command === 'take') {
    const body = JSON.stringify({ total, ids, times })
    ids = []
    times = []
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(body)
    return
  }
  res.writeHead(404).end()
}

// Longer than any pause between the bench's phases: an idle keep-alive socket the server closes
// just as the client reuses it would reset a call, and the scheduler would retry it after a backoff.
server.keepAliveTimeout = 10 * 60_000
server.headersTimeout = server.keepAliveTimeout + 1000

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`)
})

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    server.closeAllConnections()
    server.close(() => process.exit(0))
  })
}
// The bench talks to us over stdio; when it goes away, so do we.
process.stdin.on('end', () => process.exit(0))
process.stdin.resume()
