import { sql } from '../../db/kysely.js'
import type { DB } from '../../db/connect.js'
import { ProcessChanges } from '../../modules/instances/process-changes.js'
import { findTimeZones } from '../../modules/instances/runtime-repository.js'
import { batchOrEach, rethrow, type RowErrorHandler } from '../isolated.js'
import { pairWithInstances } from '../step-chores-repository.js'
import { tenantNotDeleting } from '../tenant-not-deleting.js'

/**
 * Follow-up steps that wait for their process (waitForCompletion) end once it has: done when it
 * completed, failed into a manual step when it was cancelled. The chore locks only the parent processes
 * (SKIP LOCKED) and reads the children's committed status: a child's own changes lock only the child, so
 * the two never wait for each other in opposite orders. When a batch fails for another reason than the
 * database, its steps are ended one by one, and one that fails on its own fails into a manual step, so
 * a single bad row never holds back every other waiting follow-up.
 */
export async function endFollowUps(db: DB, now: Date, limit: number, onError: RowErrorHandler = rethrow): Promise<number> {
  // Most passes find no follow-up waiting at all (a partial index holds them): no transaction then.
  const { rows: waiting } = await sql<{ any: boolean }>`
    select exists (select 1 from instance_steps where kind = 'followUpProcess' and state = 'running') as any`.execute(db)
  if (!waiting[0]?.any) return 0
  return batchOrEach({
    batch: () => endBatch(db, now, limit),
    candidates: async () => (await endedFollowUps(db, limit)).map((row) => ({ id: row.step_id })),
    one: ({ id }) => endBatch(db, now, 1, id),
    giveUp: ({ id }) => giveUp(db, now, id)
  }, onError)
}

interface EndedFollowUp {
  tenant_id: string
  instance_id: string
  step_id: string
  child_id: string
  child_status: string
  child_name: string
}

/**
 * Waiting follow-up steps whose child process has ended, in running parents, of tenants not being
 * deleted; with `lock`, the parents locked (SKIP LOCKED).
 */
async function endedFollowUps(db: DB, limit: number, options: { lock?: boolean; onlyStep?: string } = {}): Promise<EndedFollowUp[]> {
  const { rows } = await sql<EndedFollowUp>`
    select s.tenant_id, s.instance_id, s.id as step_id, c.id as child_id, c.status as child_status, c.template_name as child_name
    from instance_steps s
    join process_instances c on c.tenant_id = s.tenant_id and c.parent_step_id = s.id
    join process_instances i on i.tenant_id = s.tenant_id and i.id = s.instance_id
    where s.kind = 'followUpProcess' and s.state = 'running' and c.status <> 'running' and i.status = 'running'
      and ${tenantNotDeleting('s.tenant_id')}
    ${options.onlyStep ? sql`and s.id = ${options.onlyStep}` : sql``}
    order by s.id
    limit ${limit}
    ${options.lock ? sql`for update of i skip locked` : sql``}
  `.execute(db)
  return rows
}

/** Locks the ended follow-ups' parents and pairs each with its step, keeping those still waiting at their process's current position. */
async function lockEnded(trx: DB, limit: number, onlyStep?: string) {
  const rows = await endedFollowUps(trx, limit, { lock: true, ...(onlyStep ? { onlyStep } : {}) })
  const children = new Map(rows.map((row) => [row.step_id, row]))
  const locked = rows.length === 0 ? [] : (await pairWithInstances(trx, rows))
    .filter(({ instance, step }) => step.state === 'running' && instance.status === 'running' && instance.current_position === step.position)
  return { children, locked }
}

function endBatch(db: DB, now: Date, limit: number, onlyStep?: string): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const { children, locked } = await lockEnded(trx, limit, onlyStep)
    if (locked.length === 0) return 0
    const changes = new ProcessChanges(trx, now, await findTimeZones(trx, locked.map(({ instance }) => instance.tenant_id)))
    for (const { instance, step } of locked) {
      const child = children.get(step.id)!
      if (child.child_status === 'completed') {
        changes.activity(instance, step, 'followUpCompleted', `Process "${child.child_name}" (${child.child_id}) completed.`, { childId: child.child_id })
        changes.endStep(instance, step, 'done', null, 'Baton')
      } else {
        changes.failAutomaticStep(instance, step, `the follow-up process "${child.child_name}" (${child.child_id}) was ${child.child_status}`)
      }
      changes.bump(instance)
    }
    await changes.flush()
    return locked.length
  })
}

/** A follow-up whose ending failed on its own: it fails into a manual step, its reason naming nothing of the child. */
function giveUp(db: DB, now: Date, stepId: string): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const [one] = (await lockEnded(trx, 1, stepId)).locked
    if (!one) return false
    const changes = new ProcessChanges(trx, now, await findTimeZones(trx, [one.instance.tenant_id]))
    changes.failAutomaticStep(one.instance, one.step, 'an internal error stopped Baton from ending it when its follow-up process ended')
    changes.bump(one.instance)
    await changes.flush()
    return true
  })
}
