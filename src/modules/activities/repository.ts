import type { DB } from '../../db/connect.js'
import type { JsonObject } from '../../db/database.js'
import type { PageRequest } from '../../lib/pagination.js'

/** The activity column that links an entry to a record or a process. */
export type ActivityLink = 'property_id' | 'address_id' | 'instance_id'

export interface NewActivityRow {
  tenant_id: string
  id: string
  kind: string
  message: string
  property_id?: string | null
  address_id?: string | null
  instance_id?: string | null
  step_id?: string | null
  service_id?: string | null
  data?: JsonObject
  created_at?: Date
}

/** Newest first: ids are UUIDv7, so a smaller id is an older entry. */
export function listActivitiesOf(db: DB, tenantId: string, link: ActivityLink, recordId: string, page: PageRequest) {
  let query = db.selectFrom('activities').selectAll().where('tenant_id', '=', tenantId).where(link, '=', recordId)
    .orderBy('id', 'desc').limit(page.limit + 1)
  if (page.after) query = query.where('id', '<', page.after)
  return query.execute()
}

function toInsertable({ data, ...columns }: NewActivityRow) {
  return { ...columns, data: JSON.stringify(data ?? {}) }
}

export function insertActivity(db: DB, row: NewActivityRow) {
  return db.insertInto('activities').values(toInsertable(row)).returningAll().executeTakeFirstOrThrow()
}
