import { sql, type Insertable, type RawBuilder } from '../../../db/kysely.js'
import type { DB } from '../../../db/connect.js'
import type { ProcessTemplatesTable } from '../../../db/database.js'
import { escapeLike } from '../../../db/escape-like.js'
import type { PageRequest } from '../../../lib/pagination.js'

export interface TemplateChanges {
  name?: string | undefined
  description?: string | undefined
  active?: boolean | undefined
  controller_user_id?: string | null | undefined
  notify_on_completion?: boolean | undefined
  autostart?: string | null | undefined
  dates_checked_through?: RawBuilder<string> | undefined
  updated_at: Date
}

/**
 * The tenant's local date the day before `now`: a template's dateReached autostart that starts
 * watching now checks today and the days after, never the days before (autostart/service.ts).
 */
export function dayBeforeIn(tenantId: string, now: Date): RawBuilder<string> {
  return sql<string>`(select ((${now}::timestamptz at time zone tn.time_zone)::date - 1) from tenants tn where tn.id = ${tenantId})`
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
