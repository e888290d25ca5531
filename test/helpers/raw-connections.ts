import net from 'node:net'
import type { Test } from 'tap'

/**
 * A TCP server on 127.0.0.1 that hands each connection to `connected` as it comes (a test writes
 * what it likes, or nothing), counts them (`open` now, `accepted` in all) and destroys them all at
 * the test's end.
 */
export async function rawConnections(t: Test, connected: (socket: net.Socket) => void): Promise<{ port: number; state: { open: number; accepted: number } }> {
  const state = { open: 0, accepted: 0 }
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    state.open += 1
    state.accepted += 1
    socket.on('close', () => (state.open -= 1))
    socket.on('error', () => {})
    connected(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { port: (server.address() as net.AddressInfo).port, state }
}
