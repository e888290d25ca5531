import type { DB } from '../db/connect.js'
import { insertActivities, type NewActivityRow } from '../modules/activities/repository.js'
import { isTransientDatabaseError } from '../db/errors.js'
import { bumpVersions, findTimeZones } from '../modules/instances/runtime-repository.js'
import { beginSteps } from '../modules/instances/transitions.js'
import { isolated, rethrow, type RowErrorHandler } from './isolated.js'
import { lockWaitingSteps } from './step-chores-repository.js'

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
    const candidates = await db.selectFrom('instance_steps').select('id')
      .where('state', '=', 'waiting').where('start_at', '<=', now).orderBy('start_at').limit(limit).execute()
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
    const zones = await findTimeZones(trx, due.map((d) => d.instance.tenant_id))
    const activities: NewActivityRow[] = []
    const { steps } = await beginSteps(trx, due, now, zones, ['waiting'], activities)
    await insertActivities(trx, activities)
    const startedIn = new Set(steps.map((s) => s.instance_id))
    await bumpVersions(trx, due.map((d) => d.instance).filter((i) => startedIn.has(i.id)), now)
    return steps.length
  })
}
