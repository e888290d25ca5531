import type { DB } from '../../../db/connect.js'
import type { JsonObject, TemplateStepRow } from '../../../db/database.js'
import type { FieldError } from '../../../errors.js'
import { graphErrors, moveReferences, referencesTo, stepLabel, unreachablePositions, type GraphStep } from './graph.js'
import * as steps from './repository.js'

/*
 * Keeps the positions that decisions and expressions name pointing at the same steps when steps are
 * inserted, deleted or reordered, and refuses a change that would break the graph (graph.ts).
 */

/** Writes the settings that changed; a step's version moves on once a change, so one that `moved` has its new version already. */
async function writeSettings(db: DB, tenantId: string, changed: { id: string; settings: JsonObject }[], moved: ReadonlySet<string>): Promise<void> {
  for (const { id, settings } of changed) {
    await db.updateTable('template_steps')
      .set((eb) => ({ settings: JSON.stringify(settings), ...(moved.has(id) ? {} : { version: eb('version', '+', 1) }) }))
      .where('tenant_id', '=', tenantId).where('id', '=', id).execute()
  }
}

function moved(rows: TemplateStepRow[], move: (position: number) => number): { id: string; settings: JsonObject }[] {
  return rows.flatMap((row) => {
    const settings = moveReferences(row, move)
    return settings === row.settings ? [] : [{ id: row.id, settings }]
  })
}

/** After steps shifted (an insert or a delete; `shifted`: their ids), the positions stored in the other steps' settings follow them. */
export async function moveTemplateReferences(
  db: DB, tenantId: string, templateId: string, move: (position: number) => number, shifted: ReadonlySet<string>
): Promise<void> {
  const rows = await steps.listSteps(db, tenantId, templateId)
  await writeSettings(db, tenantId, moved(rows, move), shifted)
}

/** Why the step at `position` cannot be deleted: other steps branch to it or read it. */
export function deleteErrors(rows: TemplateStepRow[], position: number): FieldError[] {
  return referencesTo(rows.filter((r) => r.position !== position), position).map(({ step, what }) => ({
    pointer: '/params/stepId',
    detail: `${stepLabel(step)} names this step in ${what}: change that step first`
  }))
}

/** The steps no path from the first step reaches. */
function unreachableRows(rows: TemplateStepRow[]): TemplateStepRow[] {
  return unreachablePositions(rows).map((position) => rows.find((r) => r.position === position)!)
}

/** The ids of the steps (`rows`, or the template's as stored) that no path from the first step reaches. */
export async function unreachableStepIds(db: DB, tenantId: string, templateId: string, rows?: TemplateStepRow[]): Promise<Set<string>> {
  return new Set(unreachableRows(rows ?? await steps.listSteps(db, tenantId, templateId)).map((row) => row.id))
}

/**
 * The steps of the template, as a change in its transaction left them, that no path from the first
 * step reaches and that were reached before it (`before`: those that were not): in an active template
 * such a change is refused (as activation refuses them, and a reorder), since a step inserted where
 * every branch jumps past it would silently never run. A step stranded before is the change's concern
 * only if it makes one more.
 */
export async function unreachableErrors(db: DB, tenantId: string, templateId: string, pointer: string, before: ReadonlySet<string>): Promise<FieldError[]> {
  return unreachableRows(await steps.listSteps(db, tenantId, templateId))
    .filter((row) => !before.has(row.id))
    .map((row) => ({ pointer, detail: `${stepLabel(row)} could never be reached: every branch before it would jump past it` }))
}

/**
 * The settings of every step under the new order (stepIds, already checked to name each step once),
 * and what would break: a branch that now points backwards, an expression that reads a later step.
 */
export function reorderPlan(rows: TemplateStepRow[], stepIds: string[], active: boolean): { errors: FieldError[]; changed: { id: string; settings: JsonObject }[] } {
  const newPosition = new Map(stepIds.map((id, index) => [id, index + 1]))
  const oldToNew = new Map(rows.map((row) => [row.position, newPosition.get(row.id) ?? row.position]))
  const move = (position: number) => oldToNew.get(position) ?? position
  const changed = moved(rows, move)
  const settingsOf = new Map(changed.map((c) => [c.id, c.settings]))
  const reordered: GraphStep[] = rows.map((row) => ({
    position: newPosition.get(row.id) ?? row.position, kind: row.kind, name: row.name, settings: settingsOf.get(row.id) ?? row.settings
  })).sort((a, b) => a.position - b.position)
  const idAt = new Map(rows.map((row) => [newPosition.get(row.id) ?? row.position, row.id]))
  const errors = graphErrors(reordered, { complete: active }).map(({ step, detail }) => ({
    pointer: `/body/stepIds/${stepIds.indexOf(idAt.get(step.position) ?? '')}`,
    detail: `${stepLabel(step)} would have ${detail}`
  }))
  return { errors, changed }
}

/** `reordered`: the ids of the steps whose place changed (their version moved on already). */
export async function writeReorderedSettings(db: DB, tenantId: string, changed: { id: string; settings: JsonObject }[], reordered: ReadonlySet<string>): Promise<void> {
  await writeSettings(db, tenantId, changed, reordered)
}

/** Why the template's graph keeps it from being activated: broken branches or references, steps never reached. */
export function activationGraphErrors(rows: TemplateStepRow[]): FieldError[] {
  return graphErrors(rows, { complete: true }).map(({ step, detail }) => ({
    pointer: '/body/active', detail: `${stepLabel(step)} (${(step as TemplateStepRow).id}): ${detail}`
  }))
}
