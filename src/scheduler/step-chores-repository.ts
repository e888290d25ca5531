import { sql, type RawBuilder } from '../db/kysely.js'
import { eachKey } from '../db/by-keys.js'
import type { DB } from '../db/connect.js'
import type { InstanceRow, InstanceStepRow } from '../db/database.js'
import { tenantNotDeleting } from './tenant-not-deleting.js'

/** The ids of the first `limit` steps a chore's text (its from, where and order) finds: its retry list. */
async function idsOf(db: DB, steps: RawBuilder<unknown>, limit: number): Promise<{ id: string }[]> {
  const { rows } = await sql<{ id: string }>`select s.id ${steps} limit ${limit}`.execute(db)
  return rows
}

export interface LockedStep {
  instance: InstanceRow
  step: InstanceStepRow
}

/**
 * The full rows of these steps and of their processes, paired. Each row is looked up by its primary
 * key with both columns (eachKey), whatever the statistics: read as `tenant_id in (…) and id in (…)`,
 * a batch of a hundred steps across a hundred tenants walked every row of those tenants, by tenant
 * alone, and filtered them by id: after a long outage, with 400,000 due calls queued, each deadline
 * sweep read 16,000 steps and as many processes to return 100 of each (109 ms a statement, 664 ms
 * with a cold cache), more with every row the tenants held, and all of a tenant's 200,000 when it
 * was among them (test/db/foreign-key-plans.test.ts).
 */
export async function pairWithInstances(db: DB, refs: { tenant_id: string; instance_id: string; step_id: string }[]): Promise<LockedStep[]> {
  if (refs.length === 0) return []
  const [instances, steps] = await Promise.all([
    rowsByKey<InstanceRow>('process_instances', refs.map((r) => ({ tenant_id: r.tenant_id, id: r.instance_id }))).execute(db),
    rowsByKey<InstanceStepRow>('instance_steps', refs.map((r) => ({ tenant_id: r.tenant_id, id: r.step_id }))).execute(db)
  ])
  const instanceById = new Map(instances.rows.map((i) => [i.id, i]))
  return steps.rows.map((step) => ({ step, instance: instanceById.get(step.instance_id)! })).filter((pair) => pair.instance)
}

/** These rows of a table keyed by (tenant_id, id), each found by one lookup of the key (eachKey). */
function rowsByKey<Row>(table: 'process_instances' | 'instance_steps', refs: { tenant_id: string; id: string }[]) {
  return sql<Row>`select x.* from ${eachKey(refs)}
    cross join lateral (select * from ${sql.table(table)} t where t.tenant_id = k.tenant_id and t.id = k.id offset 0) x`
}

/**
 * Waiting steps of running processes whose start time has come, oldest first (a tenant being deleted has
 * none started): what a batch takes (lockWaitingSteps) and, when a batch fails, what is tried one by one
 * (findDueWaitingStepIds). One text for both: a list of steps a batch leaves, older than the step that
 * failed, would fill the one-by-one list, and the steps behind them would wait as long as it fails.
 */
const waitingStepsDue = (now: Date, onlyStep?: string) => sql`
    from instance_steps s
    join process_instances i on i.tenant_id = s.tenant_id and i.id = s.instance_id
    where s.state = 'waiting' and s.start_at <= ${now} and i.status = 'running' and ${tenantNotDeleting('s.tenant_id')}
      ${onlyStep ? sql`and s.id = ${onlyStep}` : sql``}
    order by s.start_at`

/**
 * Waiting steps of running processes whose start time has come, oldest first, with their processes
 * locked; processes another transaction holds are skipped, so concurrent workers take other steps,
 * and so are steps another worker started meanwhile. A tenant being deleted has none started.
 */
export async function lockWaitingSteps(db: DB, now: Date, limit: number, onlyStep?: string): Promise<LockedStep[]> {
  const { rows } = await sql<{ tenant_id: string; instance_id: string; step_id: string }>`
    select s.tenant_id, s.instance_id, s.id as step_id
    ${waitingStepsDue(now, onlyStep)}
    limit ${limit}
    for update of i skip locked
  `.execute(db)
  // Read again under the lock: a process whose lock another worker released after this statement's
  // snapshot comes back with its step as that snapshot saw it, waiting, though that worker started it.
  const locked = await pairWithInstances(db, rows)
  return locked.filter(({ instance, step }) => step.state === 'waiting' && instance.status === 'running')
}

/** Ids of the waiting steps a batch takes, oldest first: a failed batch's steps, to try one by one. */
export function findDueWaitingStepIds(db: DB, now: Date, limit: number): Promise<{ id: string }[]> {
  return idsOf(db, waitingStepsDue(now), limit)
}

/**
 * Unreported overdue steps, oldest deadline first (a tenant being deleted has none reported): what a
 * sweep marks (markOverdueSteps) and, when a sweep fails, what is tried one by one (findOverdueStepIds).
 */
const overdueSteps = (now: Date, onlyStep?: string) => sql`
      from instance_steps s
      join process_instances i on i.tenant_id = s.tenant_id and i.id = s.instance_id
      where s.deadline_at <= ${now} and s.deadline_notified_at is null and s.state in ('due', 'running', 'failed')
        and ${tenantNotDeleting('s.tenant_id')}
        ${onlyStep ? sql`and s.id = ${onlyStep}` : sql``}
      order by s.deadline_at`

/** Ids of the overdue steps a sweep marks, oldest deadline first: a failed sweep's steps, to try one by one. */
export function findOverdueStepIds(db: DB, now: Date, limit: number): Promise<{ id: string }[]> {
  return idsOf(db, overdueSteps(now), limit)
}

/**
 * Marks overdue steps as reported, oldest deadline first, and returns them with their processes: a
 * step taken by another worker's sweep (locked, or already marked) is not taken again. A step whose
 * process another transaction holds is left for the next sweep: a change that holds it (an advance)
 * has taken its time already and may end the step before the deadline, or mail about it itself.
 * A tenant being deleted has none reported: its controller gets no mail while the deletion runs.
 */
export async function markOverdueSteps(db: DB, now: Date, limit: number, onlyStep?: string): Promise<LockedStep[]> {
  const { rows } = await sql<{ tenant_id: string; instance_id: string; step_id: string }>`
    with overdue as (
      select s.tenant_id, s.id ${overdueSteps(now, onlyStep)}
      limit ${limit}
      for update of s skip locked
      for key share of i skip locked
    )
    update instance_steps s set deadline_notified_at = ${now}
    from overdue o
    where s.tenant_id = o.tenant_id and s.id = o.id
    returning s.tenant_id, s.instance_id, s.id as step_id
  `.execute(db)
  return pairWithInstances(db, rows)
}

/**
 * Due automatic steps that are their running process's current step, oldest first (a tenant being
 * deleted has none carried out): what a batch takes (lockDueAutomaticSteps) and, when a batch fails,
 * what is tried one by one (findDueAutomaticStepIds).
 */
const automaticStepsDue = (onlyStep?: string) => sql`
    from instance_steps s
    join process_instances i on i.tenant_id = s.tenant_id and i.id = s.instance_id
    where s.state = 'due' and s.automatic and i.status = 'running' and i.current_position = s.position
      and ${tenantNotDeleting('s.tenant_id')}
      ${onlyStep ? sql`and s.id = ${onlyStep}` : sql``}
    order by s.start_at`

/**
 * Due automatic steps that are their running process's current step, oldest first, with their
 * processes locked (SKIP LOCKED: concurrent workers take other processes). The caller checks each
 * step's state again: it was read before the lock. A tenant being deleted has none carried out.
 */
export async function lockDueAutomaticSteps(db: DB, limit: number, onlyStep?: string): Promise<LockedStep[]> {
  const { rows } = await sql<{ tenant_id: string; instance_id: string; step_id: string }>`
    select s.tenant_id, s.instance_id, s.id as step_id
    ${automaticStepsDue(onlyStep)}
    limit ${limit}
    for update of i skip locked
  `.execute(db)
  const locked = await pairWithInstances(db, rows)
  return locked.filter(({ instance, step }) => step.state === 'due' && instance.status === 'running' && instance.current_position === step.position)
}

/** Whether any automatic step is due (instance_steps_automatic_due_idx). */
export async function anyDueAutomaticStep(db: DB): Promise<boolean> {
  const row = await db.selectFrom('instance_steps').select('id').where('state', '=', 'due').where('automatic', '=', true).limit(1).executeTakeFirst()
  return row !== undefined
}

/**
 * Ids of the due automatic steps a batch takes, oldest first: a failed batch's steps, to try one by one.
 * Steps a batch leaves (a tenant's being deleted) are not among them: older than the step that failed,
 * they would fill the list, and that step would fail its batch on every pass.
 */
export function findDueAutomaticStepIds(db: DB, limit: number): Promise<{ id: string }[]> {
  return idsOf(db, automaticStepsDue(), limit)
}
