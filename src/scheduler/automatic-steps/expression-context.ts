import type { DB } from '../../db/connect.js'
import type { InstanceRow, JsonObject } from '../../db/database.js'
import { listStepsWithDeliveries } from '../../modules/instances/repository.js'
import { findRecords } from '../../modules/instances/runtime-repository.js'
import type { EvaluationContext } from '../../modules/templates/expressions/evaluate.js'
import { isoDateIn } from '../../modules/templates/expressions/evaluate.js'
import type { StepFact } from '../../modules/templates/expressions/schema.js'

/**
 * What an automatic step's expressions read, as it is in the runner's transaction: the linked
 * records' fields now, the process's steps (with their webhook calls' latest outcome), and today in
 * the tenant's time zone.
 */
export async function expressionContext(db: DB, instance: InstanceRow, now: Date, timeZone: string): Promise<EvaluationContext> {
  const ref = (id: string | null) => (id === null ? [] : [{ tenant_id: instance.tenant_id, id }])
  const [properties, addresses, steps] = await Promise.all([
    findRecords(db, 'properties', ref(instance.property_id)),
    findRecords(db, 'addresses', ref(instance.address_id)),
    listStepsWithDeliveries(db, instance.tenant_id, instance.id)
  ])
  const fieldsOf = (records: typeof properties, id: string | null) => (id === null ? null : (records.get(id)?.fields as JsonObject | undefined) ?? null)
  return {
    records: { property: fieldsOf(properties, instance.property_id), address: fieldsOf(addresses, instance.address_id) },
    steps: new Map(steps.map(({ step, delivery }) => [step.position, {
      outcome: step.state,
      decision: step.decision,
      statusCode: delivery?.last_status_code ?? null,
      deliveryStatus: delivery?.status ?? null
    } satisfies Record<StepFact, unknown>])),
    today: isoDateIn(now, timeZone)
  }
}
