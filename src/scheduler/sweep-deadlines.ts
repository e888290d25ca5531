import type { DB } from '../db/connect.js'
import { isTransientDatabaseError } from '../db/errors.js'
import { mailControllers } from '../modules/instances/notify.js'
import { isolated, rethrow, type RowErrorHandler } from './isolated.js'
import { findOverdueStepIds, markOverdueSteps } from './step-chores-repository.js'

/**
 * Marks overdue steps as reported and queues one mail to the controller for each, a batch in one
 * transaction. SKIP LOCKED and the mark let exactly one sweeper take a step, and the mail's unique
 * key would stop a second anyway. A batch that fails for a reason other than the database is tried
 * step by step, so one step that cannot be reported does not hold back the others.
 */
export async function sweepDeadlines(db: DB, now: Date, limit: number, onError: RowErrorHandler = rethrow): Promise<number> {
  try {
    return await sweepBatch(db, now, limit)
  } catch (error) {
    if (isTransientDatabaseError(error)) throw error
    const candidates = await findOverdueStepIds(db, now, limit)
    let reported = 0
    for (const { id } of candidates) {
      if (await isolated(onError, id, async () => (await sweepBatch(db, now, 1, id)) > 0)) reported += 1
    }
    return reported
  }
}

function sweepBatch(db: DB, now: Date, limit: number, onlyStep?: string): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const overdue = await markOverdueSteps(trx, now, limit, onlyStep)
    await mailControllers(trx, overdue.map(({ instance, step }) => ({
      instance, cause: { kind: 'deadlineMissed' as const, dedupeKey: `deadlineMissed:${step.id}`, step, now }
    })))
    return overdue.length
  })
}
