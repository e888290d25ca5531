import type { DB } from '../../db/connect.js'
import { toPage, type PageRequest, type PageResult } from '../../lib/pagination.js'
import * as repo from './repository.js'
import type { Activity } from './schemas.js'

type ActivityRow = Awaited<ReturnType<typeof repo.insertActivity>>

function toActivity(row: ActivityRow): Activity {
  return {
    id: row.id,
    kind: row.kind,
    message: row.message,
    propertyId: row.property_id,
    addressId: row.address_id,
    instanceId: row.instance_id,
    stepId: row.step_id,
    serviceId: row.service_id,
    data: row.data,
    createdAt: row.created_at.toISOString()
  }
}

/** The log of one record, newest first; the caller has checked that the record is the tenant's. */
export async function listActivitiesOf(
  db: DB, tenantId: string, link: repo.ActivityLink, recordId: string, page: PageRequest
): Promise<PageResult<Activity>> {
  return toPage(await repo.listActivitiesOf(db, tenantId, link, recordId, page), page, toActivity)
}
