// Outbound safety through the whole scheduler: private targets refused at call time with the guard on
// (and reached with it off), redirects not followed, huge bodies cut at the cap.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import { createGzip } from 'node:zlib'
import t, { type Test } from 'tap'
import { createHttpClient, type HttpClient } from '../../src/adapters/http-client.js'
import { createMailer } from '../../src/adapters/mailer.js'
import { createScheduler, type Scheduler } from '../../src/scheduler/scheduler.js'
import { streamLargeBody, TEN_MIB } from '../helpers/provider.js'
import { FAST_RETRIES, setupRuntime } from '../helpers/runtime.js'

const rt = await setupRuntime(t)
const QUIET = { info() {}, warn() {}, error() {} }
const mailer = createMailer({ smtpUrl: rt.smtp.url, mailDir: '', timeoutMs: 2000 })
t.teardown(() => mailer.close())

/** A scheduler on the runtime's database whose HTTP client has the guard on or off. */
function schedulerWith(guard: 'on' | 'off'): Scheduler {
  const client: HttpClient = createHttpClient({ maxBodyBytes: 65_536, maxSockets: 8, userAgent: 'Baton/test', allowPrivateNetworks: guard === 'off' })
  t.teardown(() => client.close())
  return createScheduler({
    db: rt.db, clock: rt.clock, http: client, mailer, log: QUIET, workerId: `safety-${guard}`,
    settings: {
      pollIntervalMs: 50, batchSize: 100, concurrency: 8, leaseMs: 60_000, timeoutMs: 500, mailFrom: 'Baton <baton@example.com>',
      userAgent: 'Baton/test', policy: FAST_RETRIES, claimTtlMs: 15 * 60_000
    }
  })
}

/** A catalogue service on this URL, activated for the tenant, and a running process whose one step calls it. */
async function stepCalling(webhookUrl: string) {
  const service = await rt.operator.post('/v1/marketplace-services', { name: `Svc ${webhookUrl}`, provider: 'Anyone', webhookUrl })
  if (service.statusCode !== 201) throw new Error(`service: ${service.body}`)
  await rt.api.put(`/v1/marketplace-services/${service.data.id}/activation`)
  const templateId = await rt.template([{ kind: 'webhook', name: `Call ${webhookUrl}`, serviceId: service.data.id }])
  const instance = await rt.start(templateId)
  return { instanceId: instance.id as string, deliveryId: instance.steps[0].delivery.id as string }
}

async function delivery(id: string) {
  const response = await rt.api.get(`/v1/deliveries/${id}`)
  if (response.statusCode !== 200) throw new Error(`delivery: ${response.body}`)
  return response.data
}

async function listen(t: Test, host: string, handler: http.RequestListener): Promise<number> {
  const server = http.createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, host, resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return (server.address() as AddressInfo).port
}

t.test('SSRF: private targets are refused at call time with the guard on, and reached with it off', async (t) => {
  const v6Calls: string[] = []
  const v6Port = await listen(t, '::1', (req, res) => {
    v6Calls.push(req.url ?? '')
    res.end('ok')
  })
  const targets = [
    { url: `${rt.provider.url}/hooks/loopback`, refusal: /target address 127\.0\.0\.1 is a loopback address/, reachable: true },
    { url: 'http://10.0.0.1/hook', refusal: /target address 10\.0\.0\.1 is in a private network range/, reachable: false },
    { url: 'http://169.254.169.254/latest/meta-data/', refusal: /target address 169\.254\.169\.254 is a cloud metadata address/, reachable: false },
    { url: `http://[::1]:${v6Port}/hooks/v6`, refusal: /target address ::1 is a loopback address/, reachable: true },
    {
      url: `http://localhost:${new URL(rt.provider.url).port}/hooks/by-name`,
      refusal: /target localhost resolves to a private or reserved address$/, reachable: true
    }
  ]
  const steps = []
  for (const target of targets) steps.push({ ...target, ...(await stepCalling(target.url)) })
  const callsBefore = rt.provider.calls.length

  await schedulerWith('on').runOnce()
  t.equal(rt.provider.calls.length, callsBefore, 'the guarded scheduler reached no provider')
  t.same(v6Calls, [])
  for (const step of steps) {
    const view = await delivery(step.deliveryId)
    t.equal(view.status, 'failed', `${step.url}: the delivery failed`)
    t.equal(view.attempts.length, 1, `${step.url}: after one attempt, no retries`)
    t.match(view.attempts[0], { outcome: 'failed', statusCode: null, error: step.refusal }, `${step.url}: the attempt log says why`)
    t.match(view.lastError, /ERR_TARGET_REFUSED/)
    t.equal((await rt.instance(step.instanceId)).steps[0].state, 'failed', `${step.url}: the step failed`)
  }

  // The same URLs again, through a scheduler whose client lets private networks through.
  const open = []
  for (const target of targets) open.push({ ...target, ...(await stepCalling(target.url)) })
  await schedulerWith('off').runOnce()
  for (const step of open) {
    const view = await delivery(step.deliveryId)
    t.notMatch(view.attempts[0].error ?? '', /ERR_TARGET_REFUSED|refused/i, `${step.url}: not refused`)
    if (step.reachable) t.match(view, { status: 'succeeded', attempts: [{ outcome: 'succeeded', statusCode: 200 }] }, `${step.url}: reached`)
    // Whatever answers there (or nothing), the call was made: an HTTP status, or a connection error or timeout.
    else t.ok(view.attempts.length === 1 && (view.attempts[0].statusCode !== null || view.attempts[0].error), `${step.url}: a call was tried`)
  }
  t.same(rt.provider.calls.slice(callsBefore).map((c) => new URL(c.url).pathname).sort(), ['/hooks/by-name', '/hooks/loopback'])
  t.same(v6Calls.map((u) => new URL(u, 'http://x').pathname), ['/hooks/v6'])
})

t.test('a 302 is not followed: the attempt gives up at once, as for any 3xx', async (t) => {
  const { instanceId, deliveryId } = await stepCalling(`${rt.provider.url}/hooks/moved`)
  rt.provider.queue({ status: 302, headers: { location: `${rt.provider.url}/hooks/elsewhere` }, body: 'moved' })
  const before = rt.provider.calls.length
  await rt.scheduler.runOnce()
  const calls = rt.provider.calls.slice(before)
  t.same(calls.map((c) => new URL(c.url).pathname), ['/hooks/moved'], 'only the webhook URL was called, never the redirect target')
  t.match(await delivery(deliveryId), {
    status: 'failed',
    lastError: 'HTTP 302 is not retried',
    attempts: [{ outcome: 'failed', statusCode: 302, responseBody: 'moved' }]
  })
  t.equal((await rt.instance(instanceId)).steps[0].state, 'failed')
})

t.test('a 10 MiB body, plain or gzip, is cut at the cap without the worker buffering it', async (t) => {
  const zipped = await gzipOfRepeated('z', TEN_MIB)
  const closedEarly: string[] = []
  const port = await listen(t, '127.0.0.1', (req, res) => {
    req.resume()
    res.on('close', () => { if (!res.writableFinished) closedEarly.push(new URL(req.url ?? '/', 'http://x').pathname) })
    if (req.url?.startsWith('/gzip')) return res.writeHead(200, { 'content-encoding': 'gzip' }).end(zipped)
    streamLargeBody(res)
  })
  const plain = await stepCalling(`http://127.0.0.1:${port}/plain`)
  const gzip = await stepCalling(`http://127.0.0.1:${port}/gzip`)

  const before = process.memoryUsage().arrayBuffers
  await rt.scheduler.runOnce()
  const growth = process.memoryUsage().arrayBuffers - before
  t.ok(growth < 4 * 1024 * 1024, `buffers grew by ${(growth / 1048576).toFixed(2)} MiB while 20 MiB were offered`)
  t.match(await delivery(plain.deliveryId), { status: 'succeeded', attempts: [{ outcome: 'succeeded', statusCode: 200, responseBody: 'x'.repeat(4096) }] })
  t.match(await delivery(gzip.deliveryId), { status: 'succeeded', attempts: [{ outcome: 'succeeded', statusCode: 200, responseBody: 'z'.repeat(4096) }] },
    'the gzip body was decompressed, then capped')
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.ok(closedEarly.includes('/plain'), 'the plain body was not read to its end: the connection closed at the cap')
})

/** gzip of `size` bytes of one character, made from one reused block so no 10 MiB buffer is ever allocated. */
function gzipOfRepeated(char: string, size: number): Promise<Buffer> {
  const block = Buffer.alloc(65_536, char)
  const blocks = function* () {
    for (let sent = 0; sent < size; sent += block.length) yield block
  }
  return buffer(Readable.from(blocks()).pipe(createGzip()))
}
