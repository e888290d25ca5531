// A worker process (`src/server.ts --role=worker`) answers probes and metrics on WORKER_HTTP_PORT, as
// the API does on PORT, and logs each call it makes with its delivery's id. While a process drains after
// SIGTERM, /health/ready answers 503 on its listener.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from '../../src/db/kysely.js'
import t, { type Test } from 'tap'
import { runScript, workerEnv, type RunningProcess } from '../helpers/process.js'
import { setupRuntime } from '../helpers/runtime.js'

const rt = await setupRuntime(t)

t.test('a worker listens for /health/live, /health/ready and /metrics, and logs its calls by delivery id', async (t) => {
  const { rows } = await sql<{ name: string }>`select current_database() as name`.execute(rt.db)
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-probes-'))
  const worker = runScript('src/server.ts', {
    ...workerEnv(rows[0]!.name, dataDir, 'probed'),
    BATON_ADMIN_TOKEN: rt.operatorKey, LOG_LEVEL: 'info', WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true'
  }, ['--role=worker'])
  t.teardown(async () => {
    if (worker.child.exitCode === null) worker.child.kill('SIGKILL')
    await worker.exited
    await rm(dataDir, { recursive: true, force: true })
  })
  const [, address] = await worker.waitFor(/Baton worker started; .* on (http:\/\/[^"\s]+)/, 60_000)
  const get = (path: string, headers: Record<string, string> = {}) => fetch(`${address}${path}`, { headers })

  const live = await get('/health/live')
  t.equal(live.status, 200)
  t.same(await live.json(), { status: 'ok' })
  const ready = await get('/health/ready')
  t.equal(ready.status, 200)
  t.same(await ready.json(), { status: 'ok' })

  const anonymous = await get('/metrics', { 'x-request-id': 'scrape-1' })
  t.equal(anonymous.status, 401)
  t.match(anonymous.headers.get('content-type'), /^application\/problem\+json/)
  t.equal(anonymous.headers.get('x-request-id'), 'scrape-1')
  t.match(await anonymous.json(), { status: 401, instance: '/metrics', requestId: 'scrape-1' })
  t.equal((await get('/metrics', { authorization: `Bearer ${rt.tenant.key}` })).status, 403, 'a tenant key is not the operator key')
  const missing = await get('/nothing')
  t.equal(missing.status, 404)
  t.match(await missing.json(), { status: 404, requestId: missing.headers.get('x-request-id') })

  const instance = await rt.start(await rt.template([{ kind: 'webhook', name: 'Probes: call', refersTo: { property: true } }]))
  const deliveryId = instance.steps[0].delivery.id as string
  const line = new RegExp(`"deliveryId":"${deliveryId}".*"outcome":"succeeded".*"msg":"webhook call"`)
  await worker.waitFor(line, 30_000)

  const operator = { authorization: `Bearer ${rt.operatorKey}` }
  const metrics = await get('/metrics', operator)
  t.equal(metrics.status, 200)
  t.match(metrics.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
  const text = await metrics.text()
  t.match(text, /^baton_webhook_calls_total\{outcome="succeeded",status_class="2xx"\} 1$/m, 'the worker counted its call')
  t.match(text, /^baton_webhook_call_duration_seconds_count 1$/m)
  t.match(text, /^process_resident_memory_bytes \d+$/m)
  t.match(text, /^baton_deliveries\{status="pending"\} 0$/m)

  await checkDraining(t, worker, address!)
})

/**
 * Holds the provider's next call, starts a process whose webhook step makes it, sends SIGTERM while the
 * call is in flight, and checks what a load balancer sees while the process drains; `api` is also served.
 */
async function checkDraining(t: Test, server: RunningProcess, probes: string, api?: string): Promise<void> {
  let answer = () => {}
  const held = new Promise<void>((resolve) => (answer = resolve))
  let called = () => {}
  const calling = new Promise<void>((resolve) => (called = resolve))
  rt.provider.queue(async () => {
    called()
    await held
    return { status: 200, body: 'ok' }
  })
  await rt.start(await rt.template([{ kind: 'webhook', name: 'Draining: a slow call', refersTo: { property: true } }]))
  await calling
  server.child.kill('SIGTERM')
  await server.waitFor(/shutting down/)
  const ready = await fetch(`${probes}/health/ready`)
  t.equal(ready.status, 503, 'not ready from the moment the drain begins')
  t.match(ready.headers.get('content-type'), /^application\/problem\+json/)
  t.match(await ready.json(), { status: 503, instance: '/health/ready', detail: /stopping/ })
  t.equal((await fetch(`${probes}/health/live`)).status, 200, 'still alive')
  if (api) t.equal((await fetch(`${api}/v1/tenants`, { headers: { authorization: `Bearer ${rt.operatorKey}` } })).status, 200, 'requests are still served')
  t.equal(server.child.exitCode, null, 'the call in flight holds the drain')
  answer()
  t.equal(await server.exited, 0, 'the call done, the process exits 0')
}

// npm start: for SHUTDOWN_DELAY_MS after a SIGTERM the listener stays open while the scheduler drains, and a
// load balancer must stop sending to it; then it closes, the drain going on (test/signals.test.ts).
t.test('npm start (--role=all): /health/ready answers 503 while the scheduler drains, and requests are still served for SHUTDOWN_DELAY_MS', async (t) => {
  const { rows } = await sql<{ name: string }>`select current_database() as name`.execute(rt.db)
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-probes-'))
  const server = runScript('src/server.ts', {
    ...workerEnv(rows[0]!.name, dataDir, 'all'), PORT: '0',
    BATON_ADMIN_TOKEN: rt.operatorKey, LOG_LEVEL: 'info', WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true', SHUTDOWN_DELAY_MS: '3000'
  })
  t.teardown(async () => {
    if (server.child.exitCode === null) server.child.kill('SIGKILL')
    await server.exited
    await rm(dataDir, { recursive: true, force: true })
  })
  const [, address] = await server.waitFor(/Baton listening on (http:\/\/[^"\s]+)/, 60_000)
  t.equal((await fetch(`${address}/health/ready`)).status, 200)
  await checkDraining(t, server, address!, address)
})
