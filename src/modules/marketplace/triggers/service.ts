import type { Clock } from '../../../adapters/clock.js'
import type { DB } from '../../../db/connect.js'
import type { TriggerRow } from '../../../db/database.js'
import { notFound, unprocessable, type FieldError } from '../../../errors.js'
import { newId } from '../../../lib/ids.js'
import { toPage, type PageRequest } from '../../../lib/pagination.js'
import { fieldNameProblem, isRefusedFieldName } from '../../records/fields.js'
import { cancelUnwantedDeliveries } from '../../records/trigger-repository.js'
import { findVisibleService } from '../services/service.js'
import * as repo from './repository.js'
import type { CreateTrigger, ServiceTrigger, UpdateTrigger } from './schemas.js'

function toTrigger(row: TriggerRow): ServiceTrigger {
  return { id: row.id, serviceId: row.service_id, module: row.module, events: row.events, fields: row.fields }
}

/**
 * A watched field must be one a record can hold (records.ts, fields.ts): a name with a comma, or
 * `__proto__`, is in no record's fields, so a trigger watching only such names would never fire.
 */
function checkWatchedFields(fields: string[] | undefined): void {
  const errors: FieldError[] = (fields ?? []).flatMap((name, index) => {
    const problem = isRefusedFieldName(name) ? `${name} cannot be a field: a record refuses it` : fieldNameProblem(name)
    return problem === undefined ? [] : [{ pointer: `/body/fields/${index}`, detail: problem }]
  })
  if (errors.length > 0) throw unprocessable('A trigger watches fields a record can hold: a name may not contain a comma, nor be __proto__.', errors)
}

export async function createTrigger(db: DB, clock: Clock, serviceId: string, input: CreateTrigger): Promise<ServiceTrigger> {
  await findVisibleService(db, undefined, serviceId)
  checkWatchedFields(input.fields)
  const values = { module: input.module, events: input.events, fields: input.fields ?? [] }
  return toTrigger(await repo.insertTrigger(db, { service_id: serviceId, id: newId() }, values, clock.now()))
}

export async function listTriggers(db: DB, tenantId: string | undefined, serviceId: string, page: PageRequest) {
  await findVisibleService(db, tenantId, serviceId)
  return toPage(await repo.listTriggers(db, serviceId, page), page, toTrigger)
}

export async function getTrigger(db: DB, tenantId: string | undefined, serviceId: string, id: string): Promise<ServiceTrigger> {
  await findVisibleService(db, tenantId, serviceId)
  const row = await repo.findTrigger(db, serviceId, id)
  if (!row) throw notFound('Trigger', id)
  return toTrigger(row)
}

/**
 * Changes the trigger; the service's trigger deliveries no worker has claimed that no trigger
 * matches any more are cancelled in the same commit, as a delete's are: a trigger says what the
 * provider wants called now, and a change must not do less than a delete and a new trigger would.
 */
export async function updateTrigger(db: DB, clock: Clock, serviceId: string, id: string, input: UpdateTrigger): Promise<ServiceTrigger> {
  await findVisibleService(db, undefined, serviceId)
  checkWatchedFields(input.fields)
  return db.transaction().execute(async (trx) => {
    const row = await repo.updateTrigger(trx, serviceId, id, input)
    if (!row) throw notFound('Trigger', id)
    await cancelUnwantedDeliveries(trx, serviceId, clock.now())
    return toTrigger(row)
  })
}

/** Deletes the trigger, and cancels in the same commit the calls it queued that no other trigger of the service matches. */
export async function deleteTrigger(db: DB, clock: Clock, serviceId: string, id: string): Promise<void> {
  await findVisibleService(db, undefined, serviceId)
  await db.transaction().execute(async (trx) => {
    if (!(await repo.deleteTrigger(trx, serviceId, id))) throw notFound('Trigger', id)
    await cancelUnwantedDeliveries(trx, serviceId, clock.now())
  })
}
