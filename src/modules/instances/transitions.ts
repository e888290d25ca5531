import type { DB } from '../../db/connect.js'
import type { InstanceRow, InstanceStepRow, JsonObject } from '../../db/database.js'
import type { NewActivityRow } from '../activities/repository.js'
import { addCalendarDays } from '../../lib/calendar.js'
import { hostKey } from '../../lib/host-key.js'
import { newId } from '../../lib/ids.js'
import * as repo from './runtime-repository.js'
import type { PlannedChanges } from './write-changes.js'

/*
 * Steps that start, shared by the changes of running processes (process-changes.ts) and the
 * scheduler's chore that starts waiting steps. Callers hold the processes' row locks.
 */

export interface StepStart {
  instance: InstanceRow
  step: InstanceStepRow
}

/**
 * Plans how steps start: assignees and deadlines are fixed, each gets its "started" activity and a
 * webhook step its delivery, both written only if the step really starts (it is still in the state
 * the writer expects). Reads the maintainers the steps need, in two statements (again, up to three
 * times, when a maintainer was deleted meanwhile: findMaintainers).
 */
export async function planStarts(db: DB, starts: StepStart[], now: Date, zones: Map<string, string>, plan: PlannedChanges): Promise<void> {
  if (starts.length === 0) return
  const maintainers = await findMaintainers(db, starts)
  for (const { instance, step } of starts) {
    const assignee = assigneeOf(instance, step, maintainers)
    plan.starts.push({
      tenant_id: instance.tenant_id,
      id: step.id,
      start_at: step.start_at ?? now,
      assignee_user_id: assignee,
      deadline_at: step.deadline_days ? addCalendarDays(now, step.deadline_days, zones.get(instance.tenant_id) ?? 'UTC') : null
    })
    plan.activities.push({ ...activityRow(instance, step, now, 'stepStarted', `Step "${step.name}" started.`, { assigneeUserId: assignee }), ifStarted: step.id })
    if (step.kind === 'webhook' && (step.service_id || step.target_url)) {
      plan.deliveries.push({
        tenant_id: instance.tenant_id,
        id: newId(now.getTime()),
        service_id: step.service_id,
        source: 'step',
        instance_id: instance.id,
        step_id: step.id,
        property_id: step.refers_to_property ? instance.property_id : null,
        address_id: step.refers_to_address ? instance.address_id : null,
        parameters: step.parameters,
        next_attempt_at: now,
        target_host: step.service_id === null && step.target_url !== null ? hostKey(step.target_url) ?? null : null
      })
    }
  }
}

/**
 * The maintainers of the records that steps hand to their maintainer, read in two statements, each
 * held until the transaction ends (findRecordMaintainers). A maintainer deleted while the read waited
 * for the deletion was no longer the record's (a deletion refuses a maintainer): the records
 * are read again, and their maintainer now is assigned, where the step's foreign key failed the whole
 * change (an advance's 409) once the deletion had committed. A maintainer still not held after a few
 * reads counts as none (the process's responsible user is assigned).
 */
async function findMaintainers(db: DB, starts: StepStart[]): Promise<Map<string, string | null>> {
  const wanted = (responsibility: string, column: 'property_id' | 'address_id') => starts
    .filter(({ step, instance }) => step.responsibility === responsibility && instance[column])
    .map(({ instance }) => ({ tenant_id: instance.tenant_id, id: instance[column]! }))
  for (let reads = 1; ; reads += 1) {
    const [properties, addresses] = await Promise.all([
      repo.findRecordMaintainers(db, 'properties', wanted('propertyMaintainer', 'property_id')),
      repo.findRecordMaintainers(db, 'addresses', wanted('addressMaintainer', 'address_id'))
    ])
    const records = [...properties, ...addresses]
    if (reads < MAINTAINER_READS && records.some((r) => r.maintainer_user_id !== null && !r.held)) continue
    return new Map(records.map((r) => [r.id, r.held ? r.maintainer_user_id : null]))
  }
}

/** How often findMaintainers reads the records while a maintainer it read was deleted meanwhile. */
const MAINTAINER_READS = 3

function assigneeOf(instance: InstanceRow, step: InstanceStepRow, maintainers: Map<string, string | null>): string {
  if (step.responsibility === 'user' && step.responsible_user_id) return step.responsible_user_id
  const record = step.responsibility === 'propertyMaintainer' ? instance.property_id
    : step.responsibility === 'addressMaintainer' ? instance.address_id : null
  // A record without a maintainer falls back to the process's responsible user, so no step is unassigned.
  return (record ? maintainers.get(record) : null) ?? instance.responsible_user_id
}

/** An activity on the records the step refers to (all linked records for process events). */
export function activityRow(instance: InstanceRow, step: InstanceStepRow | null, now: Date, kind: string, message: string, data: JsonObject = {}): NewActivityRow {
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
