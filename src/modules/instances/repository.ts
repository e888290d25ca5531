import { runText, runTogether } from '../../db/statement.js'
import type { DB } from '../../db/connect.js'
import type { DeliveryRow, InstanceRow, InstanceStepRow, TemplateRow, TemplateStepRow } from '../../db/database.js'
import type { PageRequest } from '../../lib/pagination.js'

export interface InstanceFilter {
  status?: string | undefined
  currentStepState?: string | undefined
  assigneeUserId?: string | undefined
  templateId?: string | undefined
  propertyId?: string | undefined
  addressId?: string | undefined
  parentId?: string | undefined
}

export interface StartFacts {
  template: TemplateRow
  timeZone: string
  /** The template's steps in order, as JSON (their columns, no timestamps needed). */
  steps: TemplateStepRow[]
  userExists: boolean
  propertyExists: boolean
  addressExists: boolean
  /** Names of webhook steps whose service is inactive or not activated by the tenant. */
  unusableSteps: string[]
}

/** Everything a start checks and copies, in one statement, as a text a start runs every time. */
const FIND_START_FACTS = `
  select to_jsonb(t) as template, tn.time_zone as "timeZone",
    coalesce((select jsonb_agg(to_jsonb(s) order by s.position) from template_steps s
      where s.tenant_id = t.tenant_id and s.template_id = t.id), '[]'::jsonb) as steps,
    exists (select 1 from users u where u.tenant_id = t.tenant_id and u.id = $3) as "userExists",
    exists (select 1 from properties p where p.tenant_id = t.tenant_id and p.id = $4) as "propertyExists",
    exists (select 1 from addresses a where a.tenant_id = t.tenant_id and a.id = $5) as "addressExists",
    coalesce((select jsonb_agg(s.name order by s.position) from template_steps s
      where s.tenant_id = t.tenant_id and s.template_id = t.id and s.kind = 'webhook' and s.service_id is not null
        and not exists (select 1 from marketplace_services m join service_activations a on a.service_id = m.id and a.tenant_id = s.tenant_id
          where m.id = s.service_id and m.active)), '[]'::jsonb) as "unusableSteps"
  from process_templates t join tenants tn on tn.id = t.tenant_id and tn.deleting_since is null
  where t.tenant_id = $1 and t.id = $2`

/** Everything a start checks and copies, in one statement; undefined when the template does not exist. */
export async function findStartFacts(
  db: DB, tenantId: string, input: { templateId: string; responsibleUserId: string; propertyId?: string | undefined; addressId?: string | undefined }
): Promise<StartFacts | undefined> {
  const { rows } = await runText<{ template: TemplateRow } & Omit<StartFacts, 'template'>>(db, FIND_START_FACTS, [
    tenantId, input.templateId, input.responsibleUserId, input.propertyId ?? null, input.addressId ?? null
  ])
  return rows[0]
}

/**
 * Whether the tenant still exists and is not being deleted (a start read its template as missing: was
 * it deleted with its tenant, or is the tenant going?).
 */
export async function tenantStays(db: DB, tenantId: string): Promise<boolean> {
  return (await db.selectFrom('tenants').select('id').where('id', '=', tenantId).where('deleting_since', 'is', null).executeTakeFirst()) !== undefined
}

/**
 * How many processes the chain of this first process has started below it (chain.ts), counted up to
 * `cap`: through the partial index on chain_root_id, so a long chain costs no more than the cap.
 */
export async function countChainProcesses(db: DB, tenantId: string, rootId: string, cap: number): Promise<number> {
  const { count } = await db.selectFrom(
    (qb) => qb.selectFrom('process_instances').select('id').where('chain_root_id', '=', rootId).where('tenant_id', '=', tenantId).limit(cap).as('c')
  ).select((eb) => eb.fn.countAll<string>().as('count')).executeTakeFirstOrThrow()
  return Number(count)
}

export function findInstance(db: DB, tenantId: string, id: string) {
  return db.selectFrom('process_instances').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst()
}

/**
 * Locks the instance for a change from the API (NOWAIT: another change in progress fails at once with
 * 55P03), with its tenant's time zone, in one statement.
 */
const LOCK_INSTANCE_WITH_ZONE = `
  select p.*, (select t.time_zone from tenants t where t.id = p.tenant_id) as baton_time_zone
  from process_instances p where p.tenant_id = $1 and p.id = $2
  for update of p nowait`

type LockedRow = InstanceRow & { baton_time_zone: string }

function lockedOf(row: LockedRow | undefined): { instance: InstanceRow; timeZone: string } | undefined {
  if (!row) return undefined
  const { baton_time_zone: timeZone, ...instance } = row
  return { instance, timeZone }
}

export function findInstanceByIdempotencyKey(db: DB, tenantId: string, key: string) {
  return db.selectFrom('process_instances').selectAll().where('tenant_id', '=', tenantId).where('idempotency_key', '=', key).executeTakeFirst()
}

export type LatestDelivery = Pick<DeliveryRow, 'id' | 'step_id' | 'status' | 'round' | 'attempt_count' | 'next_attempt_at' | 'last_status_code' | 'last_error'>

/** The columns of a process the API shows (service.toInstance), and those of its steps (toInstanceStep). */
const INSTANCE_VIEW = [
  'id', 'template_id', 'template_name', 'status', 'responsible_user_id', 'controller_user_id', 'property_id', 'address_id',
  'current_position', 'parent_instance_id', 'parent_step_id', 'version', 'started_at', 'ended_at'
] as const satisfies readonly (keyof InstanceRow)[]
const STEP_VIEW = [
  'id', 'position', 'kind', 'name', 'state', 'start_mode', 'start_days', 'deadline_days', 'refers_to_property', 'refers_to_address',
  'service_id', 'target_url', 'target_delivery', 'start_at', 'started_at', 'ended_at', 'assignee_user_id', 'deadline_at', 'note',
  'settings', 'decision'
] as const satisfies readonly (keyof InstanceStepRow)[]
const LATEST_DELIVERY = ['id', 'status', 'round', 'attempt_count', 'next_attempt_at', 'last_status_code', 'last_error'] as const

/**
 * Each step `s`'s latest delivery as `d` (all null for a step without one), and its columns prefixed
 * d_. Only a webhook step has deliveries: for any other the condition on its kind alone is checked
 * first (a one-time filter), and the deliveries' index is not probed.
 */
const JOIN_LATEST_DELIVERY = `left join lateral (
    select ${LATEST_DELIVERY.join(', ')} from deliveries
    where s.kind = 'webhook' and deliveries.tenant_id = s.tenant_id and deliveries.step_id = s.id order by deliveries.id desc limit 1
  ) d on true`
const LATEST_DELIVERY_COLUMNS = LATEST_DELIVERY.map((c) => `d.${c} as d_${c}`).join(', ')

export type InstanceView = Pick<InstanceRow, (typeof INSTANCE_VIEW)[number]>
export type StepView = Pick<InstanceStepRow, (typeof STEP_VIEW)[number]>
type DeliveryColumns = { [K in (typeof LATEST_DELIVERY)[number] as `d_${K}`]: DeliveryRow[K] | null }

/** A step's row with its latest delivery's columns (prefixed d_, all null for a step without one), split in two. */
function withLatestDelivery<S extends { id: string }>(row: S & DeliveryColumns): { step: S; delivery: LatestDelivery | undefined } {
  const { d_id, d_status, d_round, d_attempt_count, d_next_attempt_at, d_last_status_code, d_last_error, ...step } = row
  return {
    step: step as unknown as S,
    delivery: d_id === null || d_status === null || d_round === null || d_attempt_count === null || d_next_attempt_at === null ? undefined : {
      id: d_id, step_id: step.id, status: d_status, round: d_round, attempt_count: d_attempt_count, next_attempt_at: d_next_attempt_at,
      last_status_code: d_last_status_code, last_error: d_last_error
    }
  }
}

/**
 * A process as the API shows it, its steps in order, each with its latest delivery: one statement,
 * where the process's row and then its steps took two round trips. The process's columns (prefixed
 * p_) ride on each step's row; a step's columns are null on the one row of a process without steps.
 */
const FIND_INSTANCE_VIEW = `
  select ${INSTANCE_VIEW.map((c) => `p.${c} as p_${c}`).join(', ')},
    ${STEP_VIEW.map((c) => `s.${c}`).join(', ')},
    ${LATEST_DELIVERY_COLUMNS}
  from process_instances p
  left join instance_steps s on s.tenant_id = p.tenant_id and s.instance_id = p.id
  ${JOIN_LATEST_DELIVERY}
  where p.tenant_id = $1 and p.id = $2
  order by s.position`

export async function findInstanceView(
  db: DB, tenantId: string, id: string
): Promise<{ instance: InstanceView; steps: { step: StepView; delivery: LatestDelivery | undefined }[] } | undefined> {
  type Row = { [K in keyof InstanceView as `p_${K}`]: InstanceView[K] } & { [K in keyof StepView]: StepView[K] | null } & DeliveryColumns
  const { rows } = await runText<Row>(db, FIND_INSTANCE_VIEW, [tenantId, id])
  const first = rows[0]
  if (!first) return undefined
  const instance = Object.fromEntries(INSTANCE_VIEW.map((c) => [c, first[`p_${c}`]])) as InstanceView
  // A step keeps the process's columns beside its own: the view reads its own by name.
  const steps = rows.filter((row) => row.id !== null).map((row) => withLatestDelivery(row as unknown as StepView & DeliveryColumns))
  return { instance, steps }
}

/** An instance's steps in order, every column, each with its latest delivery (webhook steps that have one), in one statement. */
const LIST_STEPS_WITH_DELIVERIES = `
  select s.*, ${LATEST_DELIVERY_COLUMNS}
  from instance_steps s
  ${JOIN_LATEST_DELIVERY}
  where s.tenant_id = $1 and s.instance_id = $2
  order by s.position`

/** The statements that read a process's steps with their latest deliveries, for the plan tests (test/db/foreign-key-plans.test.ts). */
export const STEP_READS = { FIND_INSTANCE_VIEW, LIST_STEPS_WITH_DELIVERIES }

export type StepWithDelivery = { step: InstanceStepRow; delivery: LatestDelivery | undefined }

export async function listStepsWithDeliveries(db: DB, tenantId: string, instanceId: string): Promise<StepWithDelivery[]> {
  const { rows } = await runText<InstanceStepRow & DeliveryColumns>(db, LIST_STEPS_WITH_DELIVERIES, [tenantId, instanceId])
  return rows.map((row) => withLatestDelivery<InstanceStepRow>(row))
}

/**
 * The lock (LOCK_INSTANCE_WITH_ZONE), then `listStepsWithDeliveries`, sent together in one round
 * trip: the steps are read after the lock is taken, with what the change before it committed (a
 * single statement would read them as of before its wait for the lock, or its EvalPlanQual
 * recheck). Without the instance (or not the tenant's), no steps either.
 */
export async function lockWithSteps(
  db: DB, tenantId: string, id: string
): Promise<{ instance: InstanceRow; timeZone: string; steps: StepWithDelivery[] } | undefined> {
  const [locked, steps] = await runTogether(db, [
    { text: LOCK_INSTANCE_WITH_ZONE, values: [tenantId, id] },
    { text: LIST_STEPS_WITH_DELIVERIES, values: [tenantId, id] }
  ]) as [LockedRow[], (InstanceStepRow & DeliveryColumns)[]]
  const found = lockedOf(locked[0])
  return found && { ...found, steps: steps.map((row) => withLatestDelivery<InstanceStepRow>(row)) }
}

/** Newest first, with the current step joined in for the summary. */
export function listInstances(db: DB, tenantId: string, page: PageRequest, filter: InstanceFilter) {
  return instancesPage(db, tenantId, page, filter).execute()
}

/** The statement of listInstances, on its own for a look at its plan. */
export function instancesPage(db: DB, tenantId: string, page: PageRequest, filter: InstanceFilter) {
  let query = db.selectFrom('process_instances as i')
    .leftJoin('instance_steps as s', (join) => join
      .onRef('s.tenant_id', '=', 'i.tenant_id').onRef('s.instance_id', '=', 'i.id').onRef('s.position', '=', 'i.current_position'))
    .selectAll('i')
    .select([
      's.id as step_id', 's.position as step_position', 's.name as step_name', 's.state as step_state',
      's.assignee_user_id as step_assignee_user_id', 's.start_at as step_start_at', 's.deadline_at as step_deadline_at'
    ])
    .where('i.tenant_id', '=', tenantId)
    .orderBy('i.id', 'desc').limit(page.limit + 1)
  if (page.after) query = query.where('i.id', '<', page.after)
  if (filter.status) query = query.where('i.status', '=', filter.status as 'running')
  if (filter.templateId) query = query.where('i.template_id', '=', filter.templateId)
  if (filter.propertyId) query = query.where('i.property_id', '=', filter.propertyId)
  if (filter.addressId) query = query.where('i.address_id', '=', filter.addressId)
  if (filter.parentId) query = query.where('i.parent_instance_id', '=', filter.parentId)
  if (filter.currentStepState) query = query.where('i.status', '=', 'running').where('s.state', '=', filter.currentStepState as 'due')
  if (filter.assigneeUserId) query = query.where('i.status', '=', 'running').where('s.assignee_user_id', '=', filter.assigneeUserId)
  return query
}

export type InstanceListRow = Awaited<ReturnType<typeof listInstances>>[number]

/** Puts a failed webhook step's delivery back in the queue with a fresh retry budget. */
export function requeueDelivery(db: DB, tenantId: string, deliveryId: string, now: Date) {
  return db.updateTable('deliveries')
    .set((eb) => ({
      status: 'pending', round: eb('round', '+', 1), attempt_count: 0, next_attempt_at: now,
      last_status_code: null, last_error: null, lease_owner: null, lease_expires_at: null, finished_at: null
    }))
    .where('tenant_id', '=', tenantId).where('id', '=', deliveryId).where('status', '=', 'failed')
    .returning(['id', 'round']).executeTakeFirst()
}
