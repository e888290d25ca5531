import type { DB } from '../../db/connect.js'
import type { InstanceRow, InstanceStepRow, JsonObject, StepState } from '../../db/database.js'
import { insertActivities, insertActivity, type NewActivityRow } from '../activities/repository.js'
import { addCalendarDays } from '../../lib/calendar.js'
import { newId } from '../../lib/ids.js'
import { mailController } from './notify.js'
import * as repo from './runtime-repository.js'

/*
 * The state machine of a running process. Every function runs inside the caller's transaction, with
 * the instance row locked first (lock order: instance, then deliveries, then steps), so API calls
 * and schedulers never interleave on one process.
 */

export interface Moment {
  now: Date
  timeZone: string
}

export type EndOutcome = 'done' | 'skipped'

/** The step becomes the current one: it starts now, or waits for its start time. */
export async function enterStep(db: DB, instance: InstanceRow, step: InstanceStepRow, moment: Moment, previousEnd: Date): Promise<void> {
  await repo.updateInstance(db, instance.tenant_id, instance.id, { current_position: step.position, updated_at: moment.now })
  const startAt = step.start_mode === 'daysAfterPrevious'
    ? addCalendarDays(previousEnd, step.start_days ?? 0, moment.timeZone)
    : moment.now
  if (startAt.getTime() <= moment.now.getTime()) {
    await beginSteps(db, [{ instance, step: { ...step, start_at: startAt } }], moment.now, new Map([[instance.tenant_id, moment.timeZone]]), ['pending'])
  } else {
    await repo.updateStep(db, instance.tenant_id, step.id, { state: 'waiting', start_at: startAt })
  }
}

export interface StepStart {
  instance: InstanceRow
  step: InstanceStepRow
}

/**
 * Steps start: assignees and deadlines are fixed, each writes its activity and a webhook step queues
 * its delivery; a few statements for the whole batch. Steps no longer in `fromStates` are left alone;
 * the ones started return.
 */
export async function beginSteps(db: DB, starts: StepStart[], now: Date, zones: Map<string, string>, fromStates: StepState[]): Promise<InstanceStepRow[]> {
  if (starts.length === 0) return []
  const maintainers = await findMaintainers(db, starts)
  const instanceOf = new Map(starts.map(({ instance, step }) => [step.id, instance]))
  const started = await repo.startSteps(db, starts.map(({ instance, step }) => ({
    tenant_id: instance.tenant_id,
    id: step.id,
    start_at: step.start_at ?? now,
    assignee_user_id: assigneeOf(instance, step, maintainers),
    deadline_at: step.deadline_days ? addCalendarDays(now, step.deadline_days, zones.get(instance.tenant_id) ?? 'UTC') : null
  })), now, fromStates)
  await insertActivities(db, started.map((step) => activityRow(instanceOf.get(step.id)!, step, now, 'stepStarted',
    `Step "${step.name}" started.`, { assigneeUserId: step.assignee_user_id })))
  await repo.insertDeliveries(db, started.filter((step) => step.kind === 'webhook' && step.service_id).map((step) => {
    const instance = instanceOf.get(step.id)!
    return {
      tenant_id: instance.tenant_id,
      id: newId(now.getTime()),
      service_id: step.service_id!,
      source: 'step' as const,
      instance_id: instance.id,
      step_id: step.id,
      property_id: step.refers_to_property ? instance.property_id : null,
      address_id: step.refers_to_address ? instance.address_id : null,
      parameters: JSON.stringify(step.parameters),
      next_attempt_at: now
    }
  }))
  return started
}

/** Ends the current step as done or skipped and moves on to the next, or completes the process. */
export async function endStep(db: DB, instance: InstanceRow, step: InstanceStepRow, outcome: EndOutcome, moment: Moment, note: string | null, by: string): Promise<void> {
  await repo.updateStep(db, instance.tenant_id, step.id, { state: outcome, ended_at: moment.now, note })
  const verb = outcome === 'done' ? 'done' : 'skipped'
  await recordActivity(db, instance, step, moment.now, outcome === 'done' ? 'stepDone' : 'stepSkipped',
    `Step "${step.name}" ${verb} (${by}).`, note ? { note, by } : { by })
  if (outcome === 'skipped') {
    await mailController(db, instance, { kind: 'stepSkipped', dedupeKey: `stepSkipped:${step.id}`, step, now: moment.now, note })
  }
  const next = await repo.findStepAt(db, instance.tenant_id, instance.id, step.position + 1)
  if (next) await enterStep(db, instance, next, moment, moment.now)
  else await completeInstance(db, instance, moment)
}

export async function completeInstance(db: DB, instance: InstanceRow, moment: Moment): Promise<void> {
  await repo.updateInstance(db, instance.tenant_id, instance.id, { status: 'completed', ended_at: moment.now, updated_at: moment.now })
  await recordActivity(db, instance, null, moment.now, 'processCompleted', `Process "${instance.template_name}" completed.`)
  if (instance.notify_on_completion) {
    await mailController(db, instance, { kind: 'processCompleted', dedupeKey: `processCompleted:${instance.id}`, now: moment.now })
  }
}

/** A webhook step whose delivery gave up turns into a manual step, and the controller hears of it. */
export async function failWebhookStep(db: DB, instance: InstanceRow, step: InstanceStepRow, moment: Moment, reason: string, delivery: { id: string; round: number }): Promise<void> {
  await repo.updateStep(db, instance.tenant_id, step.id, { state: 'failed' })
  await recordActivity(db, instance, step, moment.now, 'webhookFailed', `Webhook step "${step.name}" failed: ${reason}.`, { deliveryId: delivery.id, reason })
  await mailController(db, instance, { kind: 'stepFailed', dedupeKey: `stepFailed:${delivery.id}:${delivery.round}`, step, now: moment.now, reason })
}

export async function cancelInstance(db: DB, instance: InstanceRow, moment: Moment, note: string | null): Promise<void> {
  await repo.cancelPendingDeliveries(db, instance.tenant_id, { instanceId: instance.id }, moment.now)
  await repo.cancelOpenSteps(db, instance.tenant_id, instance.id, moment.now)
  await repo.updateInstance(db, instance.tenant_id, instance.id, { status: 'cancelled', ended_at: moment.now, updated_at: moment.now })
  await recordActivity(db, instance, null, moment.now, 'processCancelled', `Process "${instance.template_name}" cancelled.`, note ? { note } : {})
}

/** The maintainers of the records that steps hand to their maintainer, read in at most two statements. */
async function findMaintainers(db: DB, starts: StepStart[]): Promise<Map<string, string | null>> {
  const wanted = (responsibility: string, column: 'property_id' | 'address_id') => starts
    .filter(({ step, instance }) => step.responsibility === responsibility && instance[column])
    .map(({ instance }) => ({ tenant_id: instance.tenant_id, id: instance[column]! }))
  const [properties, addresses] = await Promise.all([
    repo.findRecords(db, 'properties', wanted('propertyMaintainer', 'property_id')),
    repo.findRecords(db, 'addresses', wanted('addressMaintainer', 'address_id'))
  ])
  return new Map([...properties.values(), ...addresses.values()].map((r) => [r.id, r.maintainer_user_id]))
}

function assigneeOf(instance: InstanceRow, step: InstanceStepRow, maintainers: Map<string, string | null>): string {
  if (step.responsibility === 'user' && step.responsible_user_id) return step.responsible_user_id
  const record = step.responsibility === 'propertyMaintainer' ? instance.property_id
    : step.responsibility === 'addressMaintainer' ? instance.address_id : null
  // A record without a maintainer falls back to the process's responsible user, so no step is unassigned.
  return (record ? maintainers.get(record) : null) ?? instance.responsible_user_id
}

/** Writes an activity to the records the step refers to (all linked records for process events). */
export function recordActivity(db: DB, instance: InstanceRow, step: InstanceStepRow | null, now: Date, kind: string, message: string, data: JsonObject = {}) {
  return insertActivity(db, activityRow(instance, step, now, kind, message, data))
}

function activityRow(instance: InstanceRow, step: InstanceStepRow | null, now: Date, kind: string, message: string, data: JsonObject = {}): NewActivityRow {
  return {
    tenant_id: instance.tenant_id,
    id: newId(now.getTime()),
    kind,
    message,
    property_id: !step || step.refers_to_property ? instance.property_id : null,
    address_id: !step || step.refers_to_address ? instance.address_id : null,
    instance_id: instance.id,
    step_id: step?.id ?? null,
    service_id: step?.service_id ?? null,
    data,
    created_at: now
  }
}
