import type { DB } from '../../../db/connect.js'
import type { RecordEvent, RecordModule } from '../../../db/database.js'
import type { PageRequest } from '../../../lib/pagination.js'

export interface TriggerValues {
  module: RecordModule
  events: RecordEvent[]
  fields: string[]
}

export function findTrigger(db: DB, serviceId: string, id: string) {
  return db.selectFrom('service_triggers').selectAll().where('service_id', '=', serviceId).where('id', '=', id).executeTakeFirst()
}

export function listTriggers(db: DB, serviceId: string, page: PageRequest) {
  let query = db.selectFrom('service_triggers').selectAll().where('service_id', '=', serviceId).orderBy('id').limit(page.limit + 1)
  if (page.after) query = query.where('id', '>', page.after)
  return query.execute()
}

export function insertTrigger(db: DB, key: { service_id: string; id: string }, values: TriggerValues, now: Date) {
  return db.insertInto('service_triggers').values({ ...key, ...values, created_at: now }).returningAll().executeTakeFirstOrThrow()
}

export function updateTrigger(db: DB, serviceId: string, id: string, values: Partial<TriggerValues>) {
  return db.updateTable('service_triggers').set(values)
    .where('service_id', '=', serviceId).where('id', '=', id).returningAll().executeTakeFirst()
}

export async function deleteTrigger(db: DB, serviceId: string, id: string): Promise<boolean> {
  const result = await db.deleteFrom('service_triggers').where('service_id', '=', serviceId).where('id', '=', id).executeTakeFirst()
  return result.numDeletedRows > 0n
}
