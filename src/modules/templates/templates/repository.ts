import type { Insertable } from '../../../db/kysely.js'
import type { DB } from '../../../db/connect.js'
import type { ProcessTemplatesTable } from '../../../db/database.js'
import { escapeLike } from '../../../db/escape-like.js'
import type { PageRequest } from '../../../lib/pagination.js'
import { isoDateIn, plusDays } from '../expressions/evaluate.js'

export interface TemplateChanges {
  name?: string | undefined
  description?: string | undefined
  active?: boolean | undefined
  controller_user_id?: string | null | undefined
  notify_on_completion?: boolean | undefined
  autostart?: string | null | undefined
  /** A local date, YYYY-MM-DD. */
  dates_checked_through?: string | undefined
  updated_at: Date
}

/**
 * The tenant's local date the day before `now`: a template's dateReached autostart that starts
 * watching now checks today and the days after, never the days before (autostart/service.ts). Read
 * with Intl, as every date of a tenant is: Postgres does not know some zone names Intl takes (`AET`)
 * and reads others as fixed offsets (`CET`), so no statement reads a tenant's zone.
 */
export async function dayBeforeIn(db: DB, tenantId: string, now: Date): Promise<string> {
  const { time_zone: timeZone } = await db.selectFrom('tenants').select('time_zone').where('id', '=', tenantId).executeTakeFirstOrThrow()
  return plusDays(isoDateIn(now, timeZone), -1)
}

export function findTemplate(db: DB, tenantId: string, id: string) {
  return db.selectFrom('process_templates').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst()
}

/** Locks the template row: every change to a template or its steps takes this lock first, so they run one after another. */
export function lockTemplate(db: DB, tenantId: string, id: string) {
  return db.selectFrom('process_templates').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id)
    .forUpdate().executeTakeFirst()
}

export function listTemplates(db: DB, tenantId: string, page: PageRequest, filter: { active?: boolean | undefined; q?: string | undefined }) {
  let query = db.selectFrom('process_templates as t')
    .selectAll('t')
    .select((eb) => eb.selectFrom('template_steps as s')
      .select(eb.cast<number>(eb.fn.countAll(), 'integer').as('n'))
      .whereRef('s.tenant_id', '=', 't.tenant_id').whereRef('s.template_id', '=', 't.id')
      .$asScalar().as('step_count'))
    .where('t.tenant_id', '=', tenantId)
    .orderBy('t.id')
    .limit(page.limit + 1)
  if (page.after) query = query.where('t.id', '>', page.after)
  if (filter.active !== undefined) query = query.where('t.active', '=', filter.active)
  if (filter.q) query = query.where('t.name', 'ilike', `%${escapeLike(filter.q)}%`)
  return query.execute()
}

export function insertTemplate(db: DB, row: Insertable<ProcessTemplatesTable>) {
  return db.insertInto('process_templates').values(row).returningAll().executeTakeFirstOrThrow()
}

export function updateTemplate(db: DB, tenantId: string, id: string, changes: TemplateChanges) {
  return db.updateTable('process_templates')
    .set((eb) => ({ ...changes, version: eb('version', '+', 1) }))
    .where('tenant_id', '=', tenantId).where('id', '=', id)
    .returningAll().executeTakeFirstOrThrow()
}

export async function deleteTemplate(db: DB, tenantId: string, id: string): Promise<void> {
  await db.deleteFrom('process_templates').where('tenant_id', '=', tenantId).where('id', '=', id).execute()
}

export async function countInstancesOfTemplate(db: DB, tenantId: string, templateId: string): Promise<number> {
  const row = await db.selectFrom('process_instances')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('tenant_id', '=', tenantId).where('template_id', '=', templateId)
    .executeTakeFirstOrThrow()
  return Number(row.n)
}
