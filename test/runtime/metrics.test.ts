import t from 'tap'
import { readFileSync } from 'node:fs'
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
  const after404 = await scrape()
  t.equal(sample(after404, calls('failed', '4xx')) - sample(afterSuccess, calls('failed', '4xx')), 1, 'a 404 gives up: failed with 4xx')

  // HTTP lets a server answer any three digits; the label keeps to the classes the README lists.
  rt.provider.queue({ status: 600, body: 'odd' })
  await webhookProcess('Metrics: 600')
  await rt.scheduler.runOnce()
  const after600 = await scrape()
  t.equal(sample(after600, calls('failed', 'other')) - sample(after404, calls('failed', 'other')), 1, 'a 600 gives up: failed with other')
  t.notMatch(after600, /status_class="6xx"/, 'no class of its own')
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

/** Each family's type, and the label names each series name carries, in a scrape. */
function families(text: string) {
  const types = new Map<string, string>()
  const labels = new Map<string, Set<string>>()
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (type) types.set(type[1]!, type[2]!)
    const series = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? \S+$/.exec(line)
    if (!series) continue
    const names = labels.get(series[1]!) ?? new Set<string>()
    for (const [, name] of (series[2] ?? '').matchAll(/(\w+)="(?:[^"\\]|\\.)*"/g)) names.add(name!)
    labels.set(series[1]!, names)
  }
  return { types, labels }
}

/** The family a series name belongs to: a histogram's `_bucket`, `_sum` and `_count` belong to the histogram. */
function familyOf(types: Map<string, string>, name: string): string {
  const histogram = /^(.*)_(bucket|sum|count)$/.exec(name)?.[1]
  return histogram !== undefined && types.get(histogram) === 'histogram' ? histogram : name
}

// Labels Prometheus adds to every series of a target, which no scrape shows.
const TARGET_LABELS = new Set(['job', 'instance'])

interface Selector { metric: string; labels: string[]; within?: string }

/**
 * The metrics a PromQL expression selects, with the labels it matches them on and the function whose
 * argument each is (rate, increase…); and the labels of its `by (…)` clauses. The dashboard's
 * expressions select with `{…}` and aggregate with `by`, which is what this reads.
 */
function promql(expr: string): { selectors: Selector[]; grouping: string[] } {
  const text = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""')
  const selectors: Selector[] = []
  for (const match of text.matchAll(/([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}/g)) {
    const before = text.slice(0, match.index)
    const within = /([a-z_]+)\(\s*$/.exec(before)?.[1]
    selectors.push({ metric: match[1]!, labels: [...match[2]!.matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)].map((m) => m[1]!), ...(within ? { within } : {}) })
  }
  const grouping = [...text.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)].flatMap((m) => m[1]!.split(',').map((l) => l.trim()).filter(Boolean))
  return { selectors, grouping }
}

t.test('every metric the Grafana dashboard and the README name is in a scrape, with the labels they use', async (t) => {
  // Every labelled series has a sample: a call answered, one given up.
  rt.provider.queue({ status: 200, body: 'ok' })
  await webhookProcess('Metrics: dashboard')
  await rt.scheduler.runOnce()
  const { types, labels } = families(await scrape())
  const has = (metric: string) => labels.has(metric)

  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the dashboard's JSON, read freely
  const dashboard: any = JSON.parse(readFileSync(new URL('../../docs/grafana-dashboard.json', import.meta.url), 'utf8'))
  const variables: Array<{ name: string; type: string; query: unknown; definition?: string; datasource?: { uid?: string } }> = dashboard.templating.list
  t.match(variables.find((v) => v.name === 'datasource'), { type: 'datasource', query: 'prometheus' }, 'the data source is picked on import')
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- as above
  const panels: any[] = dashboard.panels.flatMap((panel: any) => [panel, ...(panel.panels ?? [])]).filter((panel: any) => panel.type !== 'row')
  t.ok(panels.length > 0)
  let expressions = 0
  for (const panel of panels) {
    t.equal(panel.datasource?.uid, '${datasource}', `${panel.title}: queries the chosen data source`)
    const metrics: string[] = []
    for (const target of panel.targets) {
      expressions += 1
      const where = `${panel.title}: ${target.expr}`
      t.equal(target.datasource?.uid ?? '${datasource}', '${datasource}', where)
      const { selectors, grouping } = promql(target.expr)
      t.ok(selectors.length > 0, `${where} selects a metric`)
      for (const { metric, labels: matched, within } of selectors) {
        metrics.push(metric)
        t.ok(has(metric), `${where}: ${metric} is in the scrape`)
        if (!has(metric)) continue
        for (const label of matched) t.ok(TARGET_LABELS.has(label) || labels.get(metric)!.has(label), `${where}: ${metric} has the label ${label}`)
        const type = types.get(familyOf(types, metric))
        if (within === 'rate' || within === 'increase' || within === 'irate') {
          t.ok(type === 'counter' || (type === 'histogram' && metric !== familyOf(types, metric)), `${where}: ${within}() over a counter (${metric} is a ${type})`)
        }
        if (within === 'histogram_quantile' || target.expr.startsWith('histogram_quantile')) {
          t.ok(metric.endsWith('_bucket') && type === 'histogram', `${where}: histogram_quantile over a histogram's buckets`)
          t.ok(grouping.includes('le'), `${where}: grouped by le`)
        }
      }
      for (const label of grouping) {
        t.ok(TARGET_LABELS.has(label) || selectors.some(({ metric }) => labels.get(metric)?.has(label)), `${where}: by (${label}) is a label of what it groups`)
      }
    }
    // A panel of durations shows seconds, one of sizes bytes: Grafana scales by the unit it is told.
    const unit = panel.fieldConfig?.defaults?.unit
    if (metrics.every((m) => /_seconds(_bucket)?$/.test(m))) t.equal(unit, 's', `${panel.title}: in seconds`)
    if (metrics.every((m) => /_bytes$/.test(m))) t.equal(unit, 'bytes', `${panel.title}: in bytes`)
  }
  t.ok(expressions >= panels.length)
  for (const variable of variables.filter((v) => v.type === 'query')) {
    const [, metric, label] = /^label_values\(([\w:]+),\s*(\w+)\)$/.exec(variable.definition ?? '') ?? []
    t.ok(metric !== undefined && has(metric), `variable ${variable.name} reads a metric in the scrape`)
    t.ok(label !== undefined && (TARGET_LABELS.has(label) || labels.get(metric!)?.has(label)), `variable ${variable.name}: its label exists`)
    t.equal(variable.datasource?.uid, '${datasource}')
  }

  // The README's table of Baton's metrics, both ways: each one it names is scraped with its labels, and
  // each one scraped is in it.
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  const table = /\| metric \| type \| what it counts \|\n((?:\|.*\n)+)/.exec(readme)?.[1] ?? ''
  const documented = [...table.matchAll(/`(baton_\w+)(?:\{([\w,]+)\})?`/g)].map((m) => ({ metric: m[1]!, labels: m[2]?.split(',') ?? [] }))
  t.ok(documented.length > 0, 'the README has a table of metrics')
  for (const { metric, labels: named } of documented) {
    const family = types.get(metric) === 'histogram' ? `${metric}_count` : metric
    t.ok(has(family), `${metric}, which the README names, is in the scrape`)
    for (const label of named) t.ok(labels.get(family)?.has(label), `${metric} has the label ${label}`)
  }
  const own = [...types.keys()].filter((name) => name.startsWith('baton_'))
  t.same(own.filter((name) => !documented.some((d) => d.metric === name)), [], 'every baton_ metric is in the README')
})
