import { sql, type Insertable, type Updateable } from '../../../db/kysely.js'
import type { DB } from '../../../db/connect.js'
import type { TemplateStepsTable } from '../../../db/database.js'

export type NewStepRow = Insertable<TemplateStepsTable>
export type StepChanges = Omit<Updateable<TemplateStepsTable>, 'tenant_id' | 'id' | 'template_id' | 'position' | 'version'>

function stepsOf(db: DB, tenantId: string, templateId: string) {
  return db.selectFrom('template_steps').selectAll().where('tenant_id', '=', tenantId).where('template_id', '=', templateId)
}

export function listSteps(db: DB, tenantId: string, templateId: string) {
  return stepsOf(db, tenantId, templateId).orderBy('position').execute()
}

/** Where a page of steps goes on: after this step, or before the next one, or after this position. */
export interface StepsPlace {
  after: string
  next?: string | undefined
  position?: number | undefined
}

/**
 * The steps after a page's last step, where that step is now; that step deleted, from the step that
 * came next, where that one is now; both deleted, after the last step's former position (none
 * without one). Found and read in one statement: read apart, a step added or deleted in between
 * moved the steps under the page, which skipped one or sent one again.
 */
export function listStepsAfter(db: DB, tenantId: string, templateId: string, place: StepsPlace | undefined, limit: number) {
  const positionOf = (id: string) => sql<number>`(select p.position from template_steps p where p.tenant_id = ${tenantId} and p.template_id = ${templateId} and p.id = ${id})`
  const after = place === undefined
    ? sql<number>`0`
    : sql<number>`coalesce(${positionOf(place.after)}, ${place.next === undefined ? sql`null` : sql`${positionOf(place.next)} - 1`}, ${place.position === undefined ? sql`null` : sql`${place.position - 1}::int`})`
  return stepsOf(db, tenantId, templateId).where('position', '>', after).orderBy('position').limit(limit).execute()
}

export function findStep(db: DB, tenantId: string, templateId: string, stepId: string) {
  return stepsOf(db, tenantId, templateId).where('id', '=', stepId).executeTakeFirst()
}

export async function countSteps(db: DB, tenantId: string, templateId: string): Promise<number> {
  const row = await db.selectFrom('template_steps')
    .select((eb) => eb.cast<number>(eb.fn.countAll(), 'integer').as('n'))
    .where('tenant_id', '=', tenantId).where('template_id', '=', templateId)
    .executeTakeFirstOrThrow()
  return row.n
}

// The unique (tenant_id, template_id, position) is deferrable, so Postgres checks it once the whole statement ran.
// A step's answer shows its position, so a step that moves has a new version (its ETag): the ids of those that moved.
export async function shiftPositions(db: DB, tenantId: string, templateId: string, from: number, by: 1 | -1): Promise<Set<string>> {
  const rows = await db.updateTable('template_steps')
    .set((eb) => ({ position: eb('position', '+', by), version: eb('version', '+', 1) }))
    .where('tenant_id', '=', tenantId).where('template_id', '=', templateId).where('position', '>=', from)
    .returning('id').execute()
  return new Set(rows.map((row) => row.id))
}

/**
 * Gives each step the 1-based place of its id in stepIds, in one statement. The steps whose place
 * changed have a new version, as their answer shows it: their ids.
 */
export async function setStepOrder(db: DB, tenantId: string, templateId: string, stepIds: string[]): Promise<Set<string>> {
  const newPosition = sql<number>`array_position(${sql.val(stepIds)}::uuid[], id)`
  const rows = await db.updateTable('template_steps')
    .set((eb) => ({ position: newPosition, version: eb('version', '+', 1) }))
    .where('tenant_id', '=', tenantId).where('template_id', '=', templateId)
    .where(sql<boolean>`position <> ${newPosition}`)
    .returning('id').execute()
  return new Set(rows.map((row) => row.id))
}

export function insertStep(db: DB, row: NewStepRow) {
  return db.insertInto('template_steps').values(row).returningAll().executeTakeFirstOrThrow()
}

/** Rows a statement inserts at most: one of about twenty values each, far below the protocol's 65,535 values. */
const STEPS_PER_INSERT = 1000

/** Inserts steps (a copy's), in statements of at most STEPS_PER_INSERT. */
export async function insertSteps(db: DB, rows: NewStepRow[]): Promise<void> {
  for (let i = 0; i < rows.length; i += STEPS_PER_INSERT) {
    await db.insertInto('template_steps').values(rows.slice(i, i + STEPS_PER_INSERT)).execute()
  }
}

export function updateStep(db: DB, tenantId: string, stepId: string, changes: StepChanges) {
  return db.updateTable('template_steps')
    .set((eb) => ({ ...changes, version: eb('version', '+', 1) }))
    .where('tenant_id', '=', tenantId).where('id', '=', stepId)
    .returningAll().executeTakeFirstOrThrow()
}

export async function deleteStep(db: DB, tenantId: string, stepId: string): Promise<void> {
  await db.deleteFrom('template_steps').where('tenant_id', '=', tenantId).where('id', '=', stepId).execute()
}
