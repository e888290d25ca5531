import t from 'tap'
import { claimDeliveries } from '../../src/scheduler/claim-deliveries.js'
import { DEFAULT_RETRY_POLICY } from '../../src/scheduler/retry-policy.js'
import { HOUR, MINUTE } from '../helpers/clock.js'
import { setupRuntime } from '../helpers/runtime.js'

// What an operator scrapes from /metrics after the scheduler worked: one runtime for the file, whose
// schedulers count into the app's registry as `npm start` does; each test compares before and after.
const rt = await setupRuntime(t)

async function scrape(): Promise<string> {
  const response = await rt.operator.get('/metrics')
  if (response.statusCode !== 200) throw new Error(`/metrics answered ${response.statusCode}: ${response.body}`)
  return response.body
}

/** The value of one series, e.g. `baton_mails_sent_total` or `baton_steps{state="due"}`; 0 when it has no sample yet. */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  return line === undefined ? 0 : Number(line.slice(series.length + 1))
}

async function webhookProcess(name: string) {
  const templateId = await rt.template([{ kind: 'webhook', name, refersTo: { property: true } }, { kind: 'task', name: `${name}: then` }])
  return rt.start(templateId)
}

t.test('a webhook call is counted by outcome and status class, timed, with its lag and its claim', async (t) => {
  const calls = (outcome: string, statusClass: string) => `baton_webhook_calls_total{outcome="${outcome}",status_class="${statusClass}"}`
  const instance = await webhookProcess('Metrics: 503 then 200')
  rt.provider.queue({ status: 503, body: 'busy' })
  const before = await scrape()
  t.equal(sample(before, 'baton_steps{state="due"}'), 1, 'the webhook step is due')
  t.equal(sample(before, 'baton_deliveries{status="pending"}'), 1)
  t.equal(sample(before, 'baton_deliveries_due'), 1)

  t.equal((await rt.scheduler.runOnce()).deliveries, 1)
  const afterRetry = await scrape()
  t.equal(sample(afterRetry, calls('retry', '5xx')) - sample(before, calls('retry', '5xx')), 1, 'the 503 counts as a retry with 5xx')
  t.equal(sample(afterRetry, 'baton_webhook_call_duration_seconds_count') - sample(before, 'baton_webhook_call_duration_seconds_count'), 1)
  t.ok(sample(afterRetry, 'baton_webhook_call_duration_seconds_sum') > sample(before, 'baton_webhook_call_duration_seconds_sum'), 'the call took time')
  t.ok(sample(afterRetry, 'baton_claim_batch_size_count') > sample(before, 'baton_claim_batch_size_count'), 'the claim is observed')
  t.ok(sample(afterRetry, 'baton_claim_batch_size_sum') >= sample(before, 'baton_claim_batch_size_sum') + 1, 'one delivery taken')

  // The retry falls due after the first backoff; the worker comes 30 s late.
  rt.clock.advance(DEFAULT_RETRY_POLICY.scheduleMs[0]! + 30_000)
  t.equal((await rt.scheduler.runOnce()).deliveries, 1)
  const afterSuccess = await scrape()
  t.equal(sample(afterSuccess, calls('succeeded', '2xx')) - sample(afterRetry, calls('succeeded', '2xx')), 1, 'the 200 counts as succeeded with 2xx')
  const lag = (text: string, le: string) => sample(text, `baton_webhook_call_lag_seconds_bucket{le="${le}"}`)
  t.equal(lag(afterSuccess, '10') - lag(afterRetry, '10'), 0, 'the late call is not within 10 s of its due time')
  t.equal(lag(afterSuccess, '30') - lag(afterRetry, '30'), 1, 'but within 30 s')
  t.ok(sample(afterSuccess, 'baton_webhook_call_lag_seconds_sum') - sample(afterRetry, 'baton_webhook_call_lag_seconds_sum') >= 30)
  t.equal(sample(afterSuccess, 'baton_steps{state="due"}'), 1, 'the task step after it is due now')
  t.equal(sample(afterSuccess, 'baton_deliveries{status="pending"}'), 0)
  t.equal((await rt.instance(instance.id)).steps[0].state, 'done')

  rt.provider.queue({ status: 404, body: 'gone' })
  await webhookProcess('Metrics: 404')
  await rt.scheduler.runOnce()
  t.equal(sample(await scrape(), calls('failed', '4xx')) - sample(afterSuccess, calls('failed', '4xx')), 1, 'a 404 gives up: failed with 4xx')
})

t.test('mails sent and failed, deadlines fired and leases reaped are counted', async (t) => {
  const before = await scrape()
  const templateId = await rt.template([{ kind: 'task', name: 'Metrics: call back', deadlineDays: 1, refersTo: { property: true } }])
  const late = await rt.start(templateId)
  rt.clock.advance(25 * HOUR)
  rt.smtp.refusing = true
  const refused = await rt.scheduler.runOnce()
  t.equal(refused.deadlines, 1)
  const whileRefusing = await scrape()
  t.equal(sample(whileRefusing, 'baton_deadlines_fired_total') - sample(before, 'baton_deadlines_fired_total'), 1, 'the deadline fired')
  t.equal(sample(whileRefusing, 'baton_mails_failed_total') - sample(before, 'baton_mails_failed_total'), 1, 'its mail was refused')
  t.equal(sample(whileRefusing, 'baton_outbox_unsent'), 1, 'and stays queued')

  rt.smtp.refusing = false
  rt.clock.advance(HOUR)
  t.equal((await rt.scheduler.runOnce()).mails, 1)
  const sent = await scrape()
  t.equal(sample(sent, 'baton_mails_sent_total') - sample(whileRefusing, 'baton_mails_sent_total'), 1, 'then sent')
  t.equal(sample(sent, 'baton_outbox_unsent'), 0)
  await rt.api.post(`/v1/process-instances/${late.id}/cancel`)

  await webhookProcess('Metrics: reaped')
  const [claim] = await claimDeliveries(rt.db, { workerId: 'vanished', now: rt.clock.now(), leaseMs: MINUTE, limit: 10 })
  t.ok(claim, 'another worker took the delivery and vanished')
  t.equal(sample(await scrape(), 'baton_deliveries{status="running"}'), 1)
  rt.clock.advance(MINUTE + 1000)
  t.match(await rt.scheduler.runOnce(), { reaped: 1, deliveries: 1 })
  t.equal(sample(await scrape(), 'baton_leases_reaped_total') - sample(before, 'baton_leases_reaped_total'), 1, 'its lease was reaped')
})
