import type { DB } from '../db/connect.js'
import { isolated, rethrow, type RowErrorHandler } from './isolated.js'
import { bumpVersion, findStep, findTenantProfile, lockInstance } from '../modules/instances/runtime-repository.js'
import { beginStep } from '../modules/instances/transitions.js'

/**
 * Starts waiting steps whose start time has come. Each runs in its own transaction that locks the
 * instance first (skipping instances another worker holds); a step already started is left alone.
 */
export async function startDueSteps(db: DB, now: Date, limit: number, onError: RowErrorHandler = rethrow): Promise<number> {
  const candidates = await db.selectFrom('instance_steps').select(['tenant_id', 'instance_id', 'id'])
    .where('state', '=', 'waiting').where('start_at', '<=', now)
    .orderBy('start_at').limit(limit).execute()
  let started = 0
  for (const candidate of candidates) {
    const didStart = await isolated(onError, candidate.id, () => db.transaction().execute(async (trx) => {
      const instance = await lockInstance(trx, candidate.tenant_id, candidate.instance_id, { skipLocked: true })
      const step = instance && await findStep(trx, candidate.tenant_id, candidate.id)
      if (!instance || instance.status !== 'running' || step?.state !== 'waiting') return false
      const { time_zone: timeZone } = await findTenantProfile(trx, candidate.tenant_id)
      await beginStep(trx, instance, step, { now, timeZone })
      await bumpVersion(trx, instance, now)
      return true
    }))
    if (didStart) started += 1
  }
  return started
}
