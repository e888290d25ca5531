import { sql } from '../../db/kysely.js'
import type { DB } from '../../db/connect.js'
import { ProcessChanges } from '../../modules/instances/process-changes.js'
import { findTimeZones } from '../../modules/instances/runtime-repository.js'
import { pairWithInstances } from '../step-chores-repository.js'

/**
 * Follow-up steps that wait for their process (waitForCompletion) end once it has: done when it
 * completed, failed into a manual step when it was cancelled. The chore locks only the parent processes
 * (SKIP LOCKED) and reads the children's committed status: a child's own changes lock only the child, so
 * the two never wait for each other in opposite orders.
 */
export async function endFollowUps(db: DB, now: Date, limit: number): Promise<number> {
  // Most passes find no follow-up waiting at all (a partial index holds them): no transaction then.
  const { rows: waiting } = await sql<{ any: boolean }>`
    select exists (select 1 from instance_steps where kind = 'followUpProcess' and state = 'running') as any`.execute(db)
  if (!waiting[0]?.any) return 0
  return db.transaction().execute(async (trx) => {
    const { rows } = await sql<{ tenant_id: string; instance_id: string; step_id: string; child_id: string; child_status: string; child_name: string }>`
      select s.tenant_id, s.instance_id, s.id as step_id, c.id as child_id, c.status as child_status, c.template_name as child_name
      from instance_steps s
      join process_instances c on c.tenant_id = s.tenant_id and c.parent_step_id = s.id
      join process_instances i on i.tenant_id = s.tenant_id and i.id = s.instance_id
      where s.kind = 'followUpProcess' and s.state = 'running' and c.status <> 'running' and i.status = 'running'
      order by s.id
      limit ${limit}
      for update of i skip locked
    `.execute(trx)
    if (rows.length === 0) return 0
    const children = new Map(rows.map((row) => [row.step_id, row]))
    const locked = (await pairWithInstances(trx, rows))
      .filter(({ instance, step }) => step.state === 'running' && instance.status === 'running' && instance.current_position === step.position)
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
