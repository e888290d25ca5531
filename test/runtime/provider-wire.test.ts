import net from 'node:net'
import { gzipSync } from 'node:zlib'
import t, { type Test } from 'tap'
import { DEFAULT_RETRY_POLICY } from '../../src/scheduler/retry-policy.js'
import { setupRuntime } from '../helpers/runtime.js'

// A provider whose server misbehaves on the wire: each test writes the raw bytes its step's calls get.
const rt = await setupRuntime(t)

type Answer = (socket: net.Socket) => void
interface RawProvider { url: string; heads: string[]; answers: Map<string, Answer> }

/** A server on 127.0.0.1 that records each request's head and answers it by its stepId with raw bytes. */
async function rawProvider(t: Test): Promise<RawProvider> {
  const provider: RawProvider = { url: '', heads: [], answers: new Map() }
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    // Calls are GETs without a body: each head ends a request, and a kept-alive connection carries the next.
    let received = ''
    socket.on('data', (data: Buffer) => {
      received += data.toString('latin1')
      for (let end = received.indexOf('\r\n\r\n'); end >= 0; end = received.indexOf('\r\n\r\n')) {
        const head = received.slice(0, end)
        received = received.slice(end + 4)
        provider.heads.push(head)
        const stepId = new URL(head.split(' ')[1] ?? '/', 'http://x').searchParams.get('stepId') ?? ''
        provider.answers.get(stepId)?.(socket)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  provider.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
  return provider
}

const raw = await rawProvider(t)
const service = await rt.operator.post('/v1/marketplace-services', { name: 'Wire', provider: 'WireCo', webhookUrl: `${raw.url}/hooks/wire` })
if (service.statusCode !== 201) throw new Error(service.body)
await rt.api.put(`/v1/marketplace-services/${service.data.id}/activation`)

/** A process whose only step calls the raw provider, which answers its calls with `answer`. */
async function wireStep(name: string, answer: Answer) {
  const instance = await rt.start(await rt.template([{ kind: 'webhook', name, serviceId: service.data.id, refersTo: { property: true } }]))
  const stepId = instance.steps[0].id as string
  raw.answers.set(stepId, answer)
  return { instanceId: instance.id as string, stepId, deliveryId: instance.steps[0].delivery.id as string }
}

const headsFor = (stepId: string) => raw.heads.filter((head) => head.includes(`stepId=${stepId}`))
const deliveryOf = async (deliveryId: string) => (await rt.api.get(`/v1/deliveries/${deliveryId}`)).data

t.test('a 200 whose Content-Length counts characters, not bytes, is a success: called once, not retried', async (t) => {
  const body = '{"marketValue":"Zoë"}'
  const { instanceId, stepId, deliveryId } = await wireStep('Length in characters',
    (socket) => socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`))
  await rt.scheduler.runOnce()
  const delivery = await deliveryOf(deliveryId)
  t.equal(delivery.status, 'succeeded')
  t.match(delivery.attempts, [{ outcome: 'succeeded', statusCode: 200, error: null, responseBody: '{"marketValue":"Zoë"' }])
  t.equal((await rt.instance(instanceId)).steps[0].state, 'done')
  rt.clock.advance(DEFAULT_RETRY_POLICY.scheduleMs[0]!)
  t.equal((await rt.scheduler.runOnce()).deliveries, 0)
  t.equal(headsFor(stepId).length, 1, 'the provider was called once')
})

t.test('a redirect to another host is not followed: its 3xx is the attempt, given up, and the signed URL goes nowhere else', async (t) => {
  const elsewhere = await rawProvider(t)
  const { instanceId, stepId, deliveryId } = await wireStep('Redirected', (socket) => {
    const path = headsFor(stepId)[0]!.split(' ')[1]
    socket.write(`HTTP/1.1 307 Temporary Redirect\r\nlocation: ${elsewhere.url}${path}\r\ncontent-length: 5\r\n\r\nmoved`)
  })
  await rt.scheduler.runOnce()
  const delivery = await deliveryOf(deliveryId)
  t.equal(delivery.status, 'failed')
  t.match(delivery.attempts, [{ outcome: 'failed', statusCode: 307, error: null, responseBody: 'moved' }])
  t.match(delivery.lastError, /HTTP 307 is not retried/)
  t.equal((await rt.instance(instanceId)).steps[0].state, 'failed')
  t.equal(headsFor(stepId).length, 1)
  t.same(elsewhere.heads, [], 'the other host never saw the call or its signature')
})

t.test('an answer that is not HTTP is a network error: logged with the parser\'s reason and retried', async (t) => {
  const { stepId, deliveryId } = await wireStep('Not HTTP', (socket) => socket.end('SSH-2.0-OpenSSH_9.6\r\n'))
  await rt.scheduler.runOnce()
  const delivery = await deliveryOf(deliveryId)
  t.equal(delivery.status, 'pending')
  t.match(delivery.attempts, [{ outcome: 'retry', statusCode: null, responseBody: null, error: /^HPE_INVALID_CONSTANT: Parse Error/ }])
  t.equal(headsFor(stepId).length, 1)
})

t.test('a provider answering byte by byte is cut off at the timeout of the whole call, not of each byte', async (t) => {
  const fast = rt.newScheduler({ timeoutMs: 300 })
  const { stepId, deliveryId } = await wireStep('Trickle', (socket) => {
    const bytes = Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n${'x'.repeat(1000)}`)
    let sent = 0
    const timer = setInterval(() => (socket.destroyed || sent >= bytes.length ? clearInterval(timer) : socket.write(bytes.subarray(sent, ++sent))), 10)
  })
  const started = Date.now()
  await fast.runOnce()
  t.ok(Date.now() - started < 2000, 'the attempt ended at the timeout, long before the last byte')
  const delivery = await deliveryOf(deliveryId)
  t.match(delivery.attempts, [{ outcome: 'retry', statusCode: null, error: /^ETIMEDOUT: no response within 300 ms/ }])
  t.equal(headsFor(stepId).length, 1)
})

t.test('a small gzip body that inflates far past the cap is a success, its log cut at 4 KiB', async (t) => {
  const zipped = gzipSync(Buffer.alloc(16 * 1024 * 1024, 'a'))
  const { deliveryId } = await wireStep('Bomb',
    (socket) => socket.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: ${zipped.length}\r\n\r\n`), zipped])))
  await rt.scheduler.runOnce()
  const delivery = await deliveryOf(deliveryId)
  t.match(delivery.attempts, [{ outcome: 'succeeded', statusCode: 200, responseBody: 'a'.repeat(4096) }])
})
