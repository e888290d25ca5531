import type { DB } from '../../db/connect.js'
import type { CompiledQuery } from '../../db/kysely.js'
import { runTogether } from '../../db/statement.js'
import { autostartTemplatesStatement, type AutostartTemplate } from '../autostart/repository.js'
import { autostartEvents } from '../autostart/service.js'
import { triggeredServicesStatement, type RecordChange, type TriggeredService } from './trigger-repository.js'

/** The autostart's name of each record table. */
export const RECORD_NAME = { properties: 'property', addresses: 'address' } as const

/** What watches a record write: the services its triggers call and the templates it autostarts. */
export interface Watchers {
  services: TriggeredService[]
  templates: AutostartTemplate[]
}

/**
 * The services whose triggers match a record write and the templates it autostarts, read in one
 * round trip, in the write's transaction and after it (both locked FOR KEY SHARE, see
 * queueTriggeredDeliveries and findAutostartTemplates). One after the other they were a round trip
 * each on every write: with the database 20 ms away, 40 ms of each PATCH of a record, for reads that
 * mostly find nothing.
 */
export async function readWatchers(db: DB, change: RecordChange): Promise<Watchers> {
  const services = triggeredServicesStatement(db, change)
  const events = autostartEvents(change)
  const templates = events.length === 0 ? undefined : autostartTemplatesStatement(db, change.tenantId, RECORD_NAME[change.table], events)
  if (services && templates) {
    const [serviceRows, templateRows] = await runTogether(db, [statementText(services), statementText(templates)]) as [TriggeredService[], AutostartTemplate[]]
    return { services: serviceRows, templates: templateRows }
  }
  return {
    services: services ? (await db.executeQuery(services)).rows : [],
    templates: templates ? (await db.executeQuery(templates)).rows : []
  }
}

function statementText(query: CompiledQuery<unknown>): { text: string; values: readonly unknown[] } {
  return { text: query.sql, values: query.parameters }
}
