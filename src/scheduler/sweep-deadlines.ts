import type { DB } from '../db/connect.js'
import { isolated, rethrow, type RowErrorHandler } from './isolated.js'
import { mailController } from '../modules/instances/notify.js'

/**
 * Marks overdue steps as reported and queues one mail to the controller for each. The conditional
 * update lets exactly one sweeper win a step, and the mail's unique key would stop a second anyway.
 */
export async function sweepDeadlines(db: DB, now: Date, limit: number, onError: RowErrorHandler = rethrow): Promise<number> {
  const overdue = await db.selectFrom('instance_steps').select(['tenant_id', 'id'])
    .where('deadline_at', '<=', now).where('deadline_notified_at', 'is', null)
    .where('state', 'in', ['due', 'running', 'failed'])
    .orderBy('deadline_at').limit(limit).execute()
  let reported = 0
  for (const candidate of overdue) {
    const didReport = await isolated(onError, candidate.id, () => db.transaction().execute(async (trx) => {
      const step = await trx.updateTable('instance_steps').set({ deadline_notified_at: now })
        .where('tenant_id', '=', candidate.tenant_id).where('id', '=', candidate.id)
        .where('deadline_notified_at', 'is', null).where('state', 'in', ['due', 'running', 'failed'])
        .returningAll().executeTakeFirst()
      if (!step) return false
      const instance = await trx.selectFrom('process_instances').selectAll()
        .where('tenant_id', '=', step.tenant_id).where('id', '=', step.instance_id).executeTakeFirstOrThrow()
      await mailController(trx, instance, { kind: 'deadlineMissed', dedupeKey: `deadlineMissed:${step.id}`, step, now })
      return true
    }))
    if (didReport) reported += 1
  }
  return reported
}
