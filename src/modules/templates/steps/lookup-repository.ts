import type { DB } from '../../../db/connect.js'
import type { ParameterDefinition } from './parameters.js'

// Reads of the marketplace catalogue that the template rules need; that module owns the writes.

/**
 * The service if it is active, keeping it locked (FOR SHARE) until the transaction ends, so a
 * concurrent change of its parameters waits for the step write and then sees its step, or the step
 * write waits for the change and checks its parameters against it.
 */
export function findActiveService(db: DB, serviceId: string) {
  return db.selectFrom('marketplace_services').select(['id', 'name']).where('id', '=', serviceId).where('active', '=', true)
    .forShare().executeTakeFirst()
}

/**
 * Whether the tenant activated the service, keeping the activation locked (FOR SHARE) until the
 * transaction ends, so a concurrent deactivation waits for the step write and then sees its step.
 */
export async function lockActivation(trx: DB, tenantId: string, serviceId: string): Promise<boolean> {
  const row = await trx.selectFrom('service_activations').select('service_id')
    .where('tenant_id', '=', tenantId).where('service_id', '=', serviceId).forShare().executeTakeFirst()
  return row !== undefined
}

export async function findParameterDefinitions(db: DB, serviceId: string): Promise<ParameterDefinition[]> {
  const rows = await db.selectFrom('service_parameters')
    .select(['name', 'type', 'allowed_values', 'required', 'default_value'])
    .where('service_id', '=', serviceId).orderBy('name').execute()
  return rows.map((row) => ({
    name: row.name,
    type: row.type,
    allowedValues: row.allowed_values,
    required: row.required,
    default: row.default_value ?? undefined
  }))
}
