// A marketplace provider on https, through the whole scheduler: a certificate the worker does not
// trust is an attempt that says so and is retried, with nothing sent; a trusted one is called and
// signed as over http; a handshake that hangs ends at the timeout and gives its host's slot back.
import net, { type AddressInfo } from 'node:net'
import t from 'tap'
import { createHttpClient } from '../../src/adapters/http-client.js'
import { openPostgres } from '../../src/db/connect.js'
import type { Logger } from '../../src/lib/logger.js'
import { TestProvider } from '../helpers/provider.js'
import { setupRuntime } from '../helpers/runtime.js'
import { makeCertificates } from '../helpers/tls.js'

const certs = await makeCertificates(t)
const rt = await setupRuntime(t)

/** The worker's log lines of webhook calls. */
const lines: Record<string, unknown>[] = []
const log: Logger = {
  info: (line: object) => void lines.push(line as Record<string, unknown>),
  warn: (line: object) => void lines.push(line as Record<string, unknown>),
  error() {}
}

/** A catalogue service on this URL, activated for the tenant, and a running process whose one step calls it. */
async function stepCalling(webhookUrl: string, name: string) {
  const service = await rt.operator.post('/v1/marketplace-services', { name, provider: 'TLS Co', webhookUrl })
  if (service.statusCode !== 201) throw new Error(`service: ${service.body}`)
  await rt.api.put(`/v1/marketplace-services/${service.data.id}/activation`)
  const templateId = await rt.template([{ kind: 'webhook', name: `Call ${name}`, serviceId: service.data.id }])
  const instance = await rt.start(templateId)
  return { instanceId: instance.id as string, deliveryId: instance.steps[0].delivery.id as string, secret: service.data.secret as string }
}

async function delivery(id: string) {
  const response = await rt.api.get(`/v1/deliveries/${id}`)
  if (response.statusCode !== 200) throw new Error(`delivery: ${response.body}`)
  return response.data
}

t.test('a provider whose certificate the worker does not trust: refused, nothing sent, the attempt says why and is retried', async (t) => {
  const provider = await TestProvider.start('', { tls: certs.selfSigned })
  t.teardown(() => provider.close())
  const step = await stepCalling(`${provider.url}/hooks/valuation`, 'Self-signed')
  provider.secret = step.secret
  lines.length = 0
  await rt.newScheduler({}, log).runOnce()
  const error = 'DEPTH_ZERO_SELF_SIGNED_CERT: the TLS certificate of 127.0.0.1 was refused, nothing was sent: self-signed certificate '
    + '(not issued by a certificate authority this worker trusts)'
  t.match(await delivery(step.deliveryId), { status: 'pending', attemptCount: 1, attempts: [{ outcome: 'retry', statusCode: null, error }] })
  t.equal((await rt.instance(step.instanceId)).steps[0].state, 'due', 'the step waits for its retry')
  t.equal(provider.calls.length, 0, 'the provider never saw the request')
  t.match(lines, [{ deliveryId: step.deliveryId, outcome: 'retry', error }], 'the worker\'s log line says the same')
  const logged = JSON.stringify(lines)
  t.notMatch(logged, /bcl_|signature=/, 'no claim or signature in the log')
  t.notOk(logged.includes(step.secret), 'nor the service\'s secret')
})

t.test('a provider whose certificate the worker trusts is called and signed as over http', async (t) => {
  const provider = await TestProvider.start('', { tls: certs.good })
  t.teardown(() => provider.close())
  const step = await stepCalling(`${provider.url}/hooks/valuation`, 'Trusted')
  provider.secret = step.secret
  const trusting = createHttpClient({ maxBodyBytes: 65_536, maxSockets: 8, userAgent: 'Baton/test', allowPrivateNetworks: true, ca: [certs.ca] })
  t.teardown(() => trusting.close())
  await rt.newScheduler({}, log, { http: trusting }).runOnce()
  t.match(await delivery(step.deliveryId), { status: 'succeeded', attempts: [{ outcome: 'succeeded', statusCode: 200, responseBody: 'ok' }] })
  t.equal(provider.calls.length, 1)
  t.match(provider.calls[0], { method: 'GET', signatureValid: true }, 'the signature checks out with the https URL')
})

t.test('a TLS handshake that hangs ends at the timeout and gives the host\'s slot back: the next call to the host is made', async (t) => {
  const accepted: net.Socket[] = []
  const hanging = net.createServer((socket) => {
    accepted.push(socket)
    socket.on('error', () => {})
    socket.resume()
  })
  await new Promise<void>((resolve) => hanging.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const socket of accepted) socket.destroy()
    await new Promise<void>((resolve) => hanging.close(() => resolve()))
  })
  const url = `https://127.0.0.1:${(hanging.address() as AddressInfo).port}/hooks/valuation`
  const first = await stepCalling(url, 'Hanging 1')
  const second = await stepCalling(url, 'Hanging 2')
  // One call at a time at the host, the slots on a connection of their own, as a worker holds them.
  const slots = openPostgres(rt.databaseUrl, { poolMax: 2 })
  t.teardown(() => slots.close())
  const scheduler = rt.newScheduler({ perHostConcurrency: 1, concurrency: 4, timeoutMs: 300 }, log, { session: () => slots.session({ timeouts: true }) })
  t.teardown(() => scheduler.stop(1000))
  const started = Date.now()
  await scheduler.runOnce()
  const took = Date.now() - started
  for (const step of [first, second]) {
    t.match(await delivery(step.deliveryId), {
      status: 'pending', attempts: [{ outcome: 'retry', statusCode: null, error: 'ETIMEDOUT: no response within 300 ms' }]
    }, 'each call ended by the timer, and retried')
  }
  t.equal(accepted.length, 2, 'the second call was made once the first gave its slot back')
  t.ok(took < 3000, `both within ${took} ms`)
  const closed = () => accepted.every((socket) => socket.destroyed || socket.readableEnded)
  for (const end = Date.now() + 2000; !closed() && Date.now() < end;) await new Promise((resolve) => setTimeout(resolve, 10))
  t.ok(closed(), 'no connection left open')
})
