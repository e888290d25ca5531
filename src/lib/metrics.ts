import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { AttemptOutcome } from '../db/database.js'

/** The Prometheus text exposition format (version 0.0.4). */
export const METRICS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE

/** Open rows of the scheduler's queues, read from the database at each scrape. */
export interface QueueFigures {
  pendingDeliveries: number
  dueDeliveries: number
  runningDeliveries: number
  oldestDueAt: Date | null
  steps: Record<OpenStepState, number>
  unsentMails: number
}

const OPEN_STEP_STATES = ['waiting', 'due', 'running', 'failed'] as const
type OpenStepState = (typeof OPEN_STEP_STATES)[number]

let processRegistry: Registry | undefined

/**
 * prom-client's process and Node.js metrics (process_resident_memory_bytes, process_start_time_seconds,
 * nodejs_eventloop_lag_seconds…), collected once per process: they describe the process, however many
 * apps and schedulers it builds.
 */
function defaultMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry()
    collectDefaultMetrics({ register: processRegistry })
  }
  return processRegistry
}

/**
 * A call's status class: `2xx` to `5xx`, `none` without an answer, and `other` for the statuses outside
 * 200-599 that HTTP allows a server to send (any three digits: 600-999, or a final 1xx), so the label
 * keeps to the values the README lists.
 */
function statusClass(status: number | null): string {
  if (status === null) return 'none'
  return status >= 200 && status <= 599 ? `${Math.floor(status / 100)}xx` : 'other'
}

/**
 * Baton's own metrics, in a registry of their own per app or worker (tests build many in one process;
 * prom-client's global registry would refuse the second). Everything on the scheduler's hot path is a
 * counter or a histogram kept in memory: no query per call.
 */
export class BatonMetrics {
  readonly registry = new Registry()
  private readonly on = { registers: [this.registry] }

  private readonly webhookCalls = new Counter({
    ...this.on, name: 'baton_webhook_calls_total', help: 'Webhook calls made, by outcome and HTTP status class (none: no answer; other: a status outside 200-599).',
    labelNames: ['outcome', 'status_class'] as const
  })
  private readonly callDuration = new Histogram({
    ...this.on, name: 'baton_webhook_call_duration_seconds', help: 'How long a webhook call took, from sending to the end of its answer.',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
  })
  private readonly callLag = new Histogram({
    ...this.on, name: 'baton_webhook_call_lag_seconds', help: 'How long after its delivery fell due a webhook call was made.',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900]
  })
  private readonly claimBatch = new Histogram({
    ...this.on, name: 'baton_claim_batch_size', help: 'Deliveries taken by one claim (0: the claim found none due).',
    buckets: [0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000]
  })
  private readonly mailsSent = new Counter({ ...this.on, name: 'baton_mails_sent_total', help: 'Mails the SMTP server (or the mail folder) took.' })
  private readonly mailsFailed = new Counter({ ...this.on, name: 'baton_mails_failed_total', help: 'Mail sends that failed; the mail stays queued and is retried.' })
  private readonly deadlines = new Counter({ ...this.on, name: 'baton_deadlines_fired_total', help: 'Overdue steps reported to their controller.' })
  private readonly reaped = new Counter({ ...this.on, name: 'baton_leases_reaped_total', help: 'Deliveries taken back from a worker whose lease ran out.' })

  private readonly deliveries = new Gauge({ ...this.on, name: 'baton_deliveries', help: 'Open webhook deliveries by status.', labelNames: ['status'] as const })
  private readonly due = new Gauge({ ...this.on, name: 'baton_deliveries_due', help: 'Pending deliveries whose next attempt is due now.' })
  private readonly oldestDue = new Gauge({
    ...this.on, name: 'baton_delivery_oldest_due_seconds', help: 'How long the oldest due delivery has waited for a worker.'
  })
  private readonly steps = new Gauge({ ...this.on, name: 'baton_steps', help: 'Process steps in an open state, by state.', labelNames: ['state'] as const })
  private readonly unsent = new Gauge({ ...this.on, name: 'baton_outbox_unsent', help: 'Mails queued and not yet sent.' })
  private readonly databaseUp = new Gauge({
    ...this.on, name: 'baton_database_up', help: 'Whether this scrape read the queue gauges from the database (0: it was away, and they are left out).'
  })
  /** The gauges read from the database: left out of a scrape that could not read them, not shown stale. */
  private readonly queueGauges = new Set<object>([this.deliveries, this.due, this.oldestDue, this.steps, this.unsent])

  webhookCall(outcome: AttemptOutcome, status: number | null, durationMs: number): void {
    this.webhookCalls.inc({ outcome, status_class: statusClass(status) })
    this.callDuration.observe(durationMs / 1000)
  }

  webhookCallLag(dueAt: Date, calledAt: Date): void {
    this.callLag.observe(Math.max(0, calledAt.getTime() - dueAt.getTime()) / 1000)
  }

  claimed(count: number): void {
    this.claimBatch.observe(count)
  }

  mails(sent: number, failed: number): void {
    if (sent > 0) this.mailsSent.inc(sent)
    if (failed > 0) this.mailsFailed.inc(failed)
  }

  deadlinesFired(count: number): void {
    if (count > 0) this.deadlines.inc(count)
  }

  leasesReaped(count: number): void {
    if (count > 0) this.reaped.inc(count)
  }

  /**
   * The process's metrics and Baton's, with the queue gauges set from figures just read; without them
   * (the database away) the rest, which this process holds, and `baton_database_up 0`.
   */
  async scrape(queues: QueueFigures | undefined, now: Date): Promise<string> {
    this.databaseUp.set(queues ? 1 : 0)
    if (!queues) {
      const kept = this.registry.getMetricsAsArray().filter((metric) => !this.queueGauges.has(metric))
      const own = await Promise.all(kept.map(({ name }) => this.registry.getSingleMetricAsString(name)))
      return `${await defaultMetrics().metrics()}\n${own.join('\n')}\n`
    }
    this.deliveries.set({ status: 'pending' }, queues.pendingDeliveries)
    this.deliveries.set({ status: 'running' }, queues.runningDeliveries)
    this.due.set(queues.dueDeliveries)
    this.oldestDue.set(queues.oldestDueAt ? (now.getTime() - queues.oldestDueAt.getTime()) / 1000 : 0)
    for (const state of OPEN_STEP_STATES) this.steps.set({ state }, queues.steps[state])
    this.unsent.set(queues.unsentMails)
    return `${await defaultMetrics().metrics()}\n${await this.registry.metrics()}`
  }
}
