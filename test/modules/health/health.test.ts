import t from 'tap'
import { buildApp, serverOptions } from '../../../src/app.js'
import { loadConfig } from '../../../src/config.js'
import { openPostgres } from '../../../src/db/connect.js'
import { client, setupApp } from '../../helpers/app.js'
import { databaseUrl } from '../../helpers/database.js'

t.test('health answers without a key', async (t) => {
  const { anonymous } = await setupApp(t)
  const live = await anonymous.get('/health/live')
  t.equal(live.statusCode, 200)
  t.same(live.data, { status: 'ok' })
  const ready = await anonymous.get('/health/ready')
  t.equal(ready.statusCode, 200)
  t.same(ready.data, { status: 'ok' })
  t.equal(live.headers['cache-control'], 'no-store', 'a probe is stored by no cache')
  t.equal(ready.headers['cache-control'], 'no-store')
})

t.test('readiness fails with a problem when the database is unreachable', async (t) => {
  const config = loadConfig({ LOG_LEVEL: 'silent' })
  const database = openPostgres(databaseUrl('baton_no_such_database'), { poolMax: 1 })
  const app = await buildApp({ config, db: database.db, operatorKeyHash: '0'.repeat(64) }, serverOptions(config, false))
  t.teardown(async () => {
    await app.close()
    await database.close()
  })
  const ready = await client(app).get('/health/ready')
  t.equal(ready.statusCode, 503)
  t.match(ready.headers['content-type'], /application\/problem\+json/)
  t.match(ready.data, { status: 503, detail: /database/ })
  t.equal(ready.headers['cache-control'], 'no-store', 'nor is its problem')
})

t.test('unknown routes and the OpenAPI document', async (t) => {
  const { anonymous, operator } = await setupApp(t)
  const missing = await operator.get('/v1/nothing-here')
  t.equal(missing.statusCode, 404)
  t.match(missing.headers['content-type'], /application\/problem\+json/)
  const spec = await anonymous.get('/openapi.json')
  t.equal(spec.statusCode, 200)
  t.ok(spec.data.components.schemas.Problem, 'Problem is a named component')
  // The rate limits do not count the probes (README, Limits): a client generated from the document must not retry one.
  t.notOk(spec.data.paths['/health/live'].get.responses['429'], 'the liveness probe declares no 429')
  t.notOk(spec.data.paths['/health/ready'].get.responses['429'], 'the readiness probe declares no 429')
  t.ok(spec.data.paths['/metrics'].get.responses['429'], '/metrics, which the limits count, declares its 429')
})

t.test('metrics: queue sizes in the Prometheus format, for the operator only', async (t) => {
  const { operator, anonymous, newTenant } = await setupApp(t)
  const tenant = await newTenant()
  const response = await operator.get('/metrics')
  t.equal(response.statusCode, 200)
  t.match(response.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  t.match(response.body, /^# TYPE baton_deliveries gauge$/m)
  t.match(response.body, /^baton_deliveries\{status="pending"\} 0$/m)
  t.match(response.body, /^baton_outbox_unsent 0$/m)
  t.match(response.body, /^baton_steps\{state="waiting"\} 0$/m)
  t.equal(response.headers['cache-control'], 'no-store', 'metrics are stored by no cache')
  t.equal((await anonymous.get('/metrics')).statusCode, 401)
  t.equal((await tenant.client.get('/metrics')).statusCode, 403)
})

t.test('metrics: the process figures by their conventional names, and counters and histograms of the scheduler', async (t) => {
  const { operator } = await setupApp(t)
  const { body } = await operator.get('/metrics')
  t.match(body, /^process_resident_memory_bytes \d+$/m)
  t.match(body, /^process_start_time_seconds \d+$/m)
  t.match(body, /^# TYPE nodejs_eventloop_lag_seconds gauge$/m)
  t.notMatch(body, /baton_process_/, 'no home-made process gauges')
  for (const counter of ['baton_webhook_calls_total', 'baton_mails_sent_total', 'baton_mails_failed_total', 'baton_deadlines_fired_total', 'baton_leases_reaped_total']) {
    t.match(body, new RegExp(`^# TYPE ${counter} counter$`, 'm'), counter)
  }
  for (const histogram of ['baton_webhook_call_duration_seconds', 'baton_webhook_call_lag_seconds', 'baton_claim_batch_size']) {
    t.match(body, new RegExp(`^# TYPE ${histogram} histogram$`, 'm'), histogram)
  }
  t.equal(body.match(/^# TYPE process_start_time_seconds /gm)?.length, 1, 'each metric once')
  const second = await setupApp(t)
  t.equal((await second.operator.get('/metrics')).statusCode, 200, 'a second app in the same process has its own registry')
})
