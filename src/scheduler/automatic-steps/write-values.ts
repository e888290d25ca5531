import type { DB } from '../../db/connect.js'
import type { InstanceRow, InstanceStepRow, JsonObject } from '../../db/database.js'
import { jsonBytes, firstTooDeep } from '../../lib/json-limits.js'
import { autostartOnWrite } from '../../modules/autostart/service.js'
import { processWriter } from '../../modules/instances/chain.js'
import { readStepView } from '../../modules/instances/email-step.js'
import { activityRow } from '../../modules/instances/transitions.js'
import { changedFields, fieldNameProblem, isRefusedFieldName, splitMergePatch } from '../../modules/records/fields.js'
import { FIELDS_MAX_BYTES, FIELDS_MAX_DEPTH } from '../../modules/records/limits.js'
import { lockedRecordKey, lockRecordsInOrder, patchRecord } from '../../modules/records/repository.js'
import { queueTriggeredDeliveries } from '../../modules/records/trigger-repository.js'
import { evaluate, ExpressionError } from '../../modules/templates/expressions/evaluate.js'
import type { WriteValues } from '../../modules/templates/steps/decision-schemas.js'
import { isTemplate, renderSubject } from '../../modules/templates/steps/email.js'
import type { LockedStep } from '../step-chores-repository.js'
import { expressionContext } from './expression-context.js'
import type { AutomaticStepRunner } from './runner-types.js'

const TABLES = { property: 'properties', address: 'addresses' } as const
type RecordName = keyof typeof TABLES

/** The id of the linked record of this kind; null when the process links none. */
function linkedId(instance: InstanceRow, record: RecordName): string | null {
  return record === 'property' ? instance.property_id : instance.address_id
}

function recordsWritten(step: InstanceStepRow): RecordName[] {
  return [...new Set((step.settings as WriteValues).values.map((v) => v.record))]
}

/**
 * Locks the linked records that the batch's writeValues steps write, in one statement and one order
 * (lockRecordsInOrder): locked step by step, two batches that write the same records in crossing
 * order deadlock. Nothing is read when the batch has no such step.
 */
export function lockRecordsToWrite(db: DB, due: LockedStep[]): Promise<Set<string>> {
  const refs = due.filter(({ step }) => step.kind === 'writeValues').flatMap(({ instance, step }) => recordsWritten(step)
    .map((record) => ({ table: TABLES[record], tenant_id: instance.tenant_id, id: linkedId(instance, record) }))
    .filter((ref): ref is typeof ref & { id: string } => ref.id !== null))
  return lockRecordsInOrder(db, refs)
}

/**
 * Sets fields of the linked property or address, as a PATCH of the record does: a merge of
 * top-level fields (null removes one) within the record limits, the version moves on, and the
 * triggers of the changed fields queue their deliveries in the same commit. Every value is evaluated
 * on the records as they were before the step (locked, so no write slips in between); then the
 * records are written, each gets an activity naming the process, and the step ends done. A value
 * that cannot be evaluated, a record the process does not link, or fields over the limits write
 * nothing and fail the step into a manual one.
 */
export const runWriteValues: AutomaticStepRunner = async ({ db, now, changes, instance, step, lockedRecords }) => {
  const { values } = step.settings as WriteValues
  const records = recordsWritten(step)
  const ids = new Map<RecordName, string>()
  for (const record of records) {
    const id = linkedId(instance, record)
    if (id === null || !lockedRecords.has(lockedRecordKey(TABLES[record], instance.tenant_id, id))) {
      changes.failAutomaticStep(instance, step, `the process has no ${record} to write (it is not linked, or it was deleted)`)
      return
    }
    ids.set(record, id)
  }
  const context = await expressionContext(db, instance, now, changes.zoneOf(instance))
  const patches = new Map<RecordName, JsonObject>(records.map((r) => [r, {}]))
  // A text value with placeholders is rendered as an email step's text is ({{property.fields.street}}).
  const view = values.some((v) => isTemplate(v.value)) ? (await readStepView(db, instance, step)).view : undefined
  for (const { record, field, value } of values) {
    // A step saved before __proto__ was refused: assigning it would set the patch's prototype instead.
    if (isRefusedFieldName(field)) {
      changes.failAutomaticStep(instance, step, `it cannot write a field named ${field}: no record holds one`)
      return
    }
    // A step saved before names with commas were refused.
    const nameProblem = fieldNameProblem(field)
    if (nameProblem) {
      changes.failAutomaticStep(instance, step, `it cannot write a field named ${field}: ${nameProblem}`)
      return
    }
    try {
      patches.get(record)![field] = (view && isTemplate(value) ? renderSubject(value, view) : evaluate(value, context) ?? null) as JsonObject[string]
    } catch (error) {
      if (!(error instanceof ExpressionError)) throw error
      changes.failAutomaticStep(instance, step, `the value of ${record}.${field} could not be computed: ${error.message}`)
      return
    }
  }
  for (const record of records) {
    const patch = splitMergePatch(patches.get(record))
    const before = context.records[record] ?? {}
    const after: JsonObject = { ...Object.fromEntries(Object.entries(before).filter(([key]) => !patch.remove.includes(key))), ...patch.set }
    const problem = firstTooDeep(after, FIELDS_MAX_DEPTH, '') !== undefined ? `nest deeper than ${FIELDS_MAX_DEPTH} levels`
      : jsonBytes(after) > FIELDS_MAX_BYTES ? `take more than ${FIELDS_MAX_BYTES} bytes` : undefined
    if (problem) {
      changes.failAutomaticStep(instance, step, `the ${record}'s fields would ${problem}`)
      return
    }
  }
  for (const record of records) {
    const table = TABLES[record]
    const id = ids.get(record)!
    const row = await patchRecord(db, table, instance.tenant_id, id, { fields: splitMergePatch(patches.get(record)), now })
    if (!row) throw new Error(`the locked ${record} ${id} was not updated`)
    const changed = changedFields(row.before_fields, row.fields)
    // A write by a process fires the triggers and autostarts a person's write would, one further down its chain (chain.ts).
    const writer = processWriter(instance)
    const triggered = await queueTriggeredDeliveries(db, { tenantId: instance.tenant_id, table, recordId: id, event: 'update', changedFields: changed, writer, now })
    await autostartOnWrite(db, now, { tenantId: instance.tenant_id, record, row, event: 'update', changedFields: changed, writer })
    const what = changed.length === 0 ? 'wrote its values without changing a field' : `set ${changed.join(', ')}`
    changes.rawActivity({
      ...activityRow(instance, step, now, 'recordUpdatedByProcess', `Process "${instance.template_name}" (step "${step.name}") ${what}.`,
        { changedFields: changed, triggeredDeliveryIds: triggered.map((t) => t.deliveryId) }),
      property_id: record === 'property' ? id : null,
      address_id: record === 'address' ? id : null
    })
  }
  changes.endStep(instance, step, 'done', null, 'Baton')
}
