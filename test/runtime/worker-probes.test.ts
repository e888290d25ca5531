// A worker process (`src/server.ts --role=worker`) answers probes and metrics on WORKER_HTTP_PORT, as
// the API does on PORT, and logs each call it makes with its delivery's id.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from '../../src/db/kysely.js'
import t from 'tap'
import { runScript, workerEnv } from '../helpers/process.js'
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

  worker.child.kill('SIGTERM')
  t.equal(await worker.exited, 0, 'SIGTERM still exits 0 with the listener open')
})
