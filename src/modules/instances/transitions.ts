import type { DB } from '../../db/connect.js'
import type { InstanceRow, InstanceStepRow, JsonObject } from '../../db/database.js'
import { insertActivity } from '../activities/repository.js'
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
    await beginStep(db, instance, { ...step, start_at: startAt }, moment)
  } else {
    await repo.updateStep(db, instance.tenant_id, step.id, { state: 'waiting', start_at: startAt })
  }
}

/** The step starts: assignee and deadline are fixed, a webhook step queues its delivery. */
export async function beginStep(db: DB, instance: InstanceRow, step: InstanceStepRow, moment: Moment): Promise<void> {
  const assignee = await resolveAssignee(db, instance, step)
  const deadlineAt = step.deadline_days ? addCalendarDays(moment.now, step.deadline_days, moment.timeZone) : null
  await repo.updateStep(db, instance.tenant_id, step.id, {
    state: 'due', start_at: step.start_at ?? moment.now, started_at: moment.now, assignee_user_id: assignee, deadline_at: deadlineAt
  })
  await recordActivity(db, instance, step, moment.now, 'stepStarted', `Step "${step.name}" started.`, { assigneeUserId: assignee })
  if (step.kind === 'webhook' && step.service_id) {
    await repo.insertDelivery(db, {
      tenant_id: instance.tenant_id,
      id: newId(moment.now.getTime()),
      service_id: step.service_id,
      source: 'step',
      instance_id: instance.id,
      step_id: step.id,
      property_id: step.refers_to_property ? instance.property_id : null,
      address_id: step.refers_to_address ? instance.address_id : null,
      parameters: JSON.stringify(step.parameters),
      next_attempt_at: moment.now
    })
  }
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

async function resolveAssignee(db: DB, instance: InstanceRow, step: InstanceStepRow): Promise<string> {
  if (step.responsibility === 'user' && step.responsible_user_id) return step.responsible_user_id
  const record = step.responsibility === 'propertyMaintainer' ? ['properties', instance.property_id] as const
    : step.responsibility === 'addressMaintainer' ? ['addresses', instance.address_id] as const : undefined
  const maintainer = record?.[1] ? await repo.findMaintainer(db, instance.tenant_id, record[0], record[1]) : null
  // A record without a maintainer falls back to the process's responsible user, so no step is unassigned.
  return maintainer ?? instance.responsible_user_id
}

/** Writes an activity to the records the step refers to (all linked records for process events). */
export function recordActivity(db: DB, instance: InstanceRow, step: InstanceStepRow | null, now: Date, kind: string, message: string, data: JsonObject = {}) {
  return insertActivity(db, {
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
  })
}
