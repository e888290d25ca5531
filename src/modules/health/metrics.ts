import type { DB } from '../../db/connect.js'
import { isDatabaseUnavailable } from '../../db/errors.js'
import type { BatonMetrics } from '../../lib/metrics.js'
import { queueFigures } from './repository.js'

/**
 * What /metrics answers, on the API and on a worker alike: the queue gauges are read now. While the
 * database is away the scrape still answers, without them: the process's own figures (memory, the
 * event loop, its calls and mails) are what an outage is watched by.
 */
export async function scrapeMetrics(db: DB, metrics: BatonMetrics, now: Date): Promise<string> {
  let queues
  try {
    queues = await queueFigures(db, now)
  } catch (error) {
    if (!isDatabaseUnavailable(error)) throw error
  }
  return metrics.scrape(queues, now)
}
