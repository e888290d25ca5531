import { once } from 'node:events'
import net from 'node:net'
import Fastify from 'fastify'
import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import stalledReaders from '../../src/plugins/stalled-readers.js'
import { setupApp } from '../helpers/app.js'

// A client that asks for large answers and reads none of them: its connection held the part of the
// answers the kernel's buffers did not take, for as long as the client kept it open. Over real sockets.
const ctx = await setupApp(t, { HTTP_REQUEST_TIMEOUT_MS: '500' })
const tenant = await ctx.newTenant()
const { client, key } = tenant
const user = await client.post('/v1/users', { name: 'Clara', email: 'clara@example.com' })
if (user.statusCode !== 201) throw new Error(`the user was not created: ${user.body}`)
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
const renameBody = JSON.stringify({ name: 'Clara M.' })
/** A small answer that waits while the user's row is locked. */
const renameRequest = `PATCH /v1/users/${user.data.id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\n` +
  `Content-Type: application/json\r\nContent-Length: ${renameBody.length}\r\n\r\n${renameBody}`

/** Holds the user's row locked until the returned release is called. */
async function lockUser(): Promise<() => Promise<void>> {
  let release!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  let locked!: () => void
  const isLocked = new Promise<void>((resolve) => { locked = resolve })
  const done = ctx.db.transaction().execute(async (trx) => {
    await sql`select 1 from users where tenant_id = ${tenant.id} and id = ${user.data.id} for update`.execute(trx)
    locked()
    await released
  })
  await isLocked
  return async () => {
    release()
    await done
  }
}

async function untilNoConnection(waitMs: number): Promise<number> {
  const from = performance.now()
  let open = await connections()
  while (open > 0 && performance.now() - from < waitMs) {
    await new Promise((resolve) => setTimeout(resolve, 50))
    open = await connections()
  }
  return open
}

t.test('a client that reads none of its large answers is cut off once they made no progress for HTTP_REQUEST_TIMEOUT_MS', async (t) => {
  const socket = await openConnection()
  t.teardown(() => socket.destroy())
  socket.pause()
  socket.write(pageRequest.repeat(4))
  t.equal(await untilNoConnection(8000), 0, 'the server closed the connection')
})

t.test('a large answer queued behind a slower small one on a pipelining connection is watched too', async (t) => {
  const release = await lockUser()
  const socket = await openConnection()
  t.teardown(() => socket.destroy())
  socket.pause()
  socket.write(renameRequest + pageRequest.repeat(3))
  // The pages are read and queued while the rename waits for the lock.
  await new Promise((resolve) => setTimeout(resolve, 300))
  await release()
  t.equal(await untilNoConnection(8000), 0, 'the server closed the connection')
})

t.test('a request that waits longer than HTTP_REQUEST_TIMEOUT_MS after a large answer on the same connection is answered', async (t) => {
  const socket = await openConnection()
  t.teardown(() => socket.destroy())
  const release = await lockUser()
  socket.write(pageRequest + renameRequest)
  let received = ''
  socket.setEncoding('latin1')
  socket.on('data', (chunk: string) => { received += chunk })
  // The page is sent and read; the rename waits for the lock past the timeout.
  while (!received.includes('\r\n0\r\n\r\n')) await new Promise((resolve) => setTimeout(resolve, 20))
  await new Promise((resolve) => setTimeout(resolve, 1200))
  await release()
  while (!received.includes('"Clara M."') && !socket.destroyed) await new Promise((resolve) => setTimeout(resolve, 20))
  t.match(received, /HTTP\/1\.1 200 OK[^]*"name":"Clara M\."/, 'the rename is answered')
  t.equal(await connections(), 1, 'on the connection kept alive')
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

t.test('a client that reads one large write slowly but steadily gets it whole: a write draining is progress', async (t) => {
  // Far larger than the kernel's buffers take, sent in one write: most of it drains from Node's own
  // queue for some seconds, longer than the timeout, while the client reads on. The queue moves about
  // half a send buffer at a time (some 2 MB here), well within the timeout at this rate.
  const app = Fastify()
  await app.register(stalledReaders, { timeoutMs: 2000 })
  const body = 'x'.repeat(24 * 1024 * 1024)
  app.get('/large', async () => body)
  const { port: largePort } = new URL(await app.listen({ host: '127.0.0.1', port: 0 }))
  t.teardown(() => app.close())
  const socket = net.connect(Number(largePort), '127.0.0.1')
  await once(socket, 'connect')
  t.teardown(() => socket.destroy())
  socket.write('GET /large HTTP/1.1\r\nHost: x\r\n\r\n')
  let received = 0
  // About 6 MB/s: a chunk, then a pause.
  socket.on('data', (chunk: Buffer) => {
    received += chunk.length
    socket.pause()
    setTimeout(() => socket.resume(), 10)
  })
  while (received < body.length && !socket.destroyed) await new Promise((resolve) => setTimeout(resolve, 20))
  t.ok(received > body.length, `the whole answer came (${received} bytes)`)
  t.notOk(socket.destroyed, 'on a connection still open')
})

