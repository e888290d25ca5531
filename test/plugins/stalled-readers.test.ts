import { once } from 'node:events'
import net from 'node:net'
import t from 'tap'
import { setupApp } from '../helpers/app.js'

// A client that asks for large answers and reads none of them: its connection held the part of the
// answers the kernel's buffers did not take, for as long as the client kept it open. Over real sockets.
const ctx = await setupApp(t, { HTTP_REQUEST_TIMEOUT_MS: '500' })
const { client, key } = await ctx.newTenant()
const { port } = new URL(await ctx.app.listen({ host: '127.0.0.1', port: 0 }))

// A page of these is about 4 MiB (a page's most): a few of them are more than the kernel's buffers take.
for (let i = 0; i < 20; i++) {
  const created = await client.post('/v1/properties', { fields: { blob: `${i}`.padEnd(250 * 1024, 'x') } })
  if (created.statusCode !== 201) throw new Error(`a property was not created: ${created.body}`)
}

const connections = () => new Promise<number>((resolve, reject) => {
  ctx.app.server.getConnections((error, count) => (error ? reject(error) : resolve(count)))
})

async function openConnection(): Promise<net.Socket> {
  const socket = net.connect(Number(port), '127.0.0.1')
  await once(socket, 'connect')
  return socket
}

const pageRequest = `GET /v1/properties?limit=200 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\n\r\n`

t.test('a client that reads none of its large answers is cut off once they made no progress for HTTP_REQUEST_TIMEOUT_MS', async (t) => {
  const socket = await openConnection()
  t.teardown(() => socket.destroy())
  socket.pause()
  socket.write(pageRequest.repeat(4))
  const from = performance.now()
  let open = await connections()
  while (open > 0 && performance.now() - from < 8000) {
    await new Promise((resolve) => setTimeout(resolve, 50))
    open = await connections()
  }
  t.equal(open, 0, `no connection left open ${Math.round(performance.now() - from)} ms after the requests`)
})

t.test('a client that reads its large answers gets them whole, on a connection kept alive', async (t) => {
  const socket = await openConnection()
  t.teardown(() => socket.destroy())
  socket.write(pageRequest.repeat(2))
  let received = ''
  socket.setEncoding('latin1')
  const pages = () => received.split('HTTP/1.1 200 OK').length - 1
  for await (const chunk of socket) {
    received += chunk
    // A page is sent in chunks as it is read: the last chunk is empty.
    if ((pages() === 2 && received.endsWith('\r\n0\r\n\r\n')) || received.length > 20 * 1024 * 1024) break
  }
  t.equal(pages(), 2, 'both pages came')
  t.equal(await connections(), 1, 'and the connection is still open')
})
