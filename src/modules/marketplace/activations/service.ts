import type { Clock } from '../../../adapters/clock.js'
import type { DB } from '../../../db/connect.js'
import { conflict, notFound, ProblemError, unprocessable } from '../../../errors.js'
import { isForeignKeyViolation } from '../../records/repository.js'
import * as repo from './repository.js'
import { findServiceSeenBy, findTemplatesUsing } from '../services/repository.js'
import type { ServiceActivation } from '../services/schemas.js'
import { nameTemplates } from '../services/service.js'
import { cancelWithdrawnDeliveries } from '../../records/trigger-repository.js'

function toActivation(row: { service_id: string; activated_at: Date }): ServiceActivation {
  return { serviceId: row.service_id, activated: true, activatedAt: row.activated_at.toISOString() }
}

/** The service as this tenant sees it (active, or activated by it): any other answers 404, as an unknown id does. */
async function requireService(db: DB, tenantId: string, serviceId: string) {
  const service = await findServiceSeenBy(db, tenantId, serviceId)
  if (!service) throw notFound('Marketplace service', serviceId)
  return service
}

export async function activateService(db: DB, clock: Clock, tenantId: string, serviceId: string): Promise<ServiceActivation> {
  const service = await requireService(db, tenantId, serviceId)
  if (!service.active) throw unprocessable(`Marketplace service ${serviceId} is not active, so it cannot be activated.`)
  try {
    return toActivation(await repo.upsertActivation(db, tenantId, serviceId, clock.now()))
  } catch (error) {
    // The operator deleted the service between the read above and this write, which its foreign key refused.
    if (violatedConstraint(error) === 'service_activations_service_id_fkey') {
      throw new ProblemError(404, 'Not Found', `Marketplace service ${serviceId} was deleted while it was being activated.`)
    }
    throw error
  }
}

/** The constraint a foreign-key violation names; undefined for any other error. */
function violatedConstraint(error: unknown): string | undefined {
  return isForeignKeyViolation(error) ? (error as { constraint?: string }).constraint : undefined
}

export async function getActivation(db: DB, tenantId: string, serviceId: string): Promise<ServiceActivation> {
  const row = await repo.findActivation(db, tenantId, serviceId)
  if (!row) throw notFound(`Activation of marketplace service ${serviceId}`)
  return toActivation(row)
}

// The activation stays locked from the usage check to the delete; step writes hold it FOR SHARE,
// so a step added meanwhile is either seen here (409) or finds the activation gone (422). The
// tenant's trigger calls of the service not yet claimed are cancelled with it; one queued in the same
// instant is cancelled when a worker claims it (src/scheduler/deliver.ts).
export async function deactivateService(db: DB, clock: Clock, tenantId: string, serviceId: string): Promise<void> {
  await requireService(db, tenantId, serviceId)
  await db.transaction().execute(async (trx) => {
    if (!(await repo.lockActivation(trx, tenantId, serviceId))) return
    const templates = await findTemplatesUsing(trx, { serviceId, tenantId })
    if (templates.length > 0) {
      throw conflict(`Marketplace service ${serviceId} is used by steps of ${nameTemplates(templates)}; remove those steps first.`)
    }
    await repo.deleteActivation(trx, tenantId, serviceId)
    await cancelWithdrawnDeliveries(trx, tenantId, serviceId, clock.now())
  })
}
