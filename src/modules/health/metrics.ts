import type { QueueFigures } from './repository.js'

/** The Prometheus text exposition format (version 0.0.4). */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

type Metric = [name: string, type: 'gauge' | 'counter', help: string, samples: [labels: string, value: number][]]

export function renderMetrics(queues: QueueFigures, now: Date, proc: { rssBytes: number; uptimeSeconds: number }): string {
  const metrics: Metric[] = [
    ['baton_deliveries', 'gauge', 'Open webhook deliveries by status.', [
      ['{status="pending"}', queues.pendingDeliveries], ['{status="running"}', queues.runningDeliveries]
    ]],
    ['baton_deliveries_due', 'gauge', 'Pending deliveries whose next attempt is due now.', [['', queues.dueDeliveries]]],
    ['baton_delivery_oldest_due_seconds', 'gauge', 'How long the oldest due delivery has waited for a worker.', [
      ['', queues.oldestDueAt ? (now.getTime() - queues.oldestDueAt.getTime()) / 1000 : 0]
    ]],
    ['baton_steps_waiting', 'gauge', 'Steps waiting for their start time.', [['', queues.waitingSteps]]],
    ['baton_outbox_unsent', 'gauge', 'Mails queued and not yet sent.', [['', queues.unsentMails]]],
    ['baton_process_resident_memory_bytes', 'gauge', 'Resident memory of this process.', [['', proc.rssBytes]]],
    ['baton_process_uptime_seconds', 'gauge', 'Seconds since this process started.', [['', proc.uptimeSeconds]]]
  ]
  return metrics.map(([name, type, help, samples]) => [
    `# HELP ${name} ${help}`,
    `# TYPE ${name} ${type}`,
    ...samples.map(([labels, value]) => `${name}${labels} ${value}`)
  ].join('\n')).join('\n') + '\n'
}
