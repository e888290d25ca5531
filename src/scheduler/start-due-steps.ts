import type { DB } from '../db/connect.js'
import { isTransientDatabaseError } from '../db/errors.js'
import { ProcessChanges } from '../modules/instances/process-changes.js'
import { findTimeZones } from '../modules/instances/runtime-repository.js'
import { isolated, rethrow, type RowErrorHandler } from './isolated.js'
import { findDueWaitingStepIds, lockWaitingSteps } from './step-chores-repository.js'

/**
 * Starts waiting steps whose start time has come, a batch in one transaction: their processes are
 * locked with SKIP LOCKED, so workers take disjoint batches, and a step another worker started
 * meanwhile is left alone. When a batch fails for a reason other than the database, its steps are
 * tried one by one, so one step that cannot start does not hold back the others.
 */
export async function startDueSteps(db: DB, now: Date, limit: number, onError: RowErrorHandler = rethrow): Promise<number> {
  try {
    return await startBatch(db, now, limit)
  } catch (error) {
    if (isTransientDatabaseError(error)) throw error
    const candidates = await findDueWaitingStepIds(db, now, limit)
    let started = 0
    for (const { id } of candidates) {
      if (await isolated(onError, id, async () => (await startBatch(db, now, 1, id)) > 0)) started += 1
    }
    return started
  }
}

function startBatch(db: DB, now: Date, limit: number, onlyStep?: string): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const due = await lockWaitingSteps(trx, now, limit, onlyStep)
    if (due.length === 0) return 0
    const changes = new ProcessChanges(trx, now, await findTimeZones(trx, due.map((d) => d.instance.tenant_id)))
    for (const { instance, step } of due) {
      changes.startStep(instance, step, 'waiting')
      changes.bump(instance)
    }
    const written = await changes.flush()
    return written.steps.length
  })
}
