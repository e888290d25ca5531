import type { DB } from '../../../db/connect.js'

/**
 * A service as one tenant sees it: `active` and `activated_at` (null when not activated) say whether
 * it may be used. A tenant being deleted has none activated: its apiClaims are refused as its keys are.
 */
export function findServiceForTenant(db: DB, tenantId: string, serviceId: string) {
  return db.selectFrom('marketplace_services as s')
    .leftJoin('service_activations as a', (j) => j.onRef('a.service_id', '=', 's.id').on('a.tenant_id', '=', tenantId)
      .on(({ exists, selectFrom }) => exists(selectFrom('tenants').where('id', '=', tenantId).where('deleting_since', 'is', null))))
    .select(['s.id', 's.name', 's.active', 'a.activated_at'])
    .where('s.id', '=', serviceId).executeTakeFirst()
}

/**
 * The service as findServiceForTenant reads it, for a provider's write-back with an apiClaim: its
 * activation held (FOR KEY SHARE) until the write commits, so a deactivation waits for the write, and
 * a write that comes while a deactivation is under way waits for it and then finds no activation.
 * Undefined without an activation (or for a tenant being deleted).
 */
export function holdServiceForClaim(trx: DB, tenantId: string, serviceId: string) {
  return trx.selectFrom('service_activations as a')
    .innerJoin('marketplace_services as s', 's.id', 'a.service_id')
    .select(['s.id', 's.name', 's.active', 'a.activated_at'])
    .where('a.tenant_id', '=', tenantId).where('a.service_id', '=', serviceId)
    .where(({ exists, selectFrom }) => exists(selectFrom('tenants').where('id', '=', tenantId).where('deleting_since', 'is', null)))
    .forKeyShare('a')
    .executeTakeFirst()
}

export function findActivation(db: DB, tenantId: string, serviceId: string) {
  return db.selectFrom('service_activations').selectAll()
    .where('tenant_id', '=', tenantId).where('service_id', '=', serviceId).executeTakeFirst()
}

/** The activation, locked FOR UPDATE until the transaction ends: step writes that would use it wait. */
export function lockActivation(trx: DB, tenantId: string, serviceId: string) {
  return trx.selectFrom('service_activations').select('service_id')
    .where('tenant_id', '=', tenantId).where('service_id', '=', serviceId).forUpdate().executeTakeFirst()
}

/** Inserts the activation, or returns the existing one unchanged (a no-op update so RETURNING yields it). */
export function upsertActivation(db: DB, tenantId: string, serviceId: string, now: Date) {
  return db.insertInto('service_activations')
    .values({ tenant_id: tenantId, service_id: serviceId, activated_at: now })
    .onConflict((oc) => oc.columns(['tenant_id', 'service_id'])
      .doUpdateSet((eb) => ({ service_id: eb.ref('excluded.service_id') })))
    .returningAll()
    .executeTakeFirstOrThrow()
}

export async function deleteActivation(db: DB, tenantId: string, serviceId: string): Promise<boolean> {
  const result = await db.deleteFrom('service_activations')
    .where('tenant_id', '=', tenantId).where('service_id', '=', serviceId).executeTakeFirst()
  return result.numDeletedRows > 0n
}
