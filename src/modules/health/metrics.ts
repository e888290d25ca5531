import type { DB } from '../../db/connect.js'
import type { BatonMetrics } from '../../lib/metrics.js'
import { queueFigures } from './repository.js'

/** What /metrics answers, on the API and on a worker alike: the queue gauges are read now. */
export async function scrapeMetrics(db: DB, metrics: BatonMetrics, now: Date): Promise<string> {
  return metrics.scrape(await queueFigures(db, now), now)
}
