import type { Clock } from '../../../adapters/clock.js'
import type { DB } from '../../../db/connect.js'
import type { FieldError } from '../../../errors.js'
import { sameValue } from '../../../lib/changes.js'
import { checkVersion, type ExpectedVersions } from '../../../lib/versioning.js'
import type { Template } from '../templates/schemas.js'
import { loadTemplate, lockedTemplate, touchTemplate } from '../templates/service.js'
import * as steps from './repository.js'
import { rejectIfInvalid } from './validation.js'
import { reorderPlan, writeReorderedSettings } from './references.js'

/** Rewrites the positions of all steps of a template at once; stepIds must name each of its steps exactly once. */
export async function reorderSteps(
  db: DB, clock: Clock, tenantId: string, templateId: string, stepIds: string[], expected: ExpectedVersions
): Promise<Template> {
  return db.transaction().execute(async (trx) => {
    const template = await lockedTemplate(trx, tenantId, templateId)
    checkVersion(expected, template.version, `Process template ${templateId}`)
    const current = await steps.listSteps(trx, tenantId, templateId)
    rejectIfInvalid('The new order is not valid', orderErrors(current.map((s) => s.id), stepIds))
    if (sameValue(current.map((s) => s.id), stepIds)) return loadTemplate(trx, tenantId, templateId)
    // Branches and step references follow their steps; an order that turns one backwards is refused.
    const plan = reorderPlan(current, stepIds, template.active)
    rejectIfInvalid('The new order is not valid', plan.errors)
    const reordered = await steps.setStepOrder(trx, tenantId, templateId, stepIds)
    await writeReorderedSettings(trx, tenantId, plan.changed, reordered)
    await touchTemplate(trx, clock, tenantId, templateId)
    return loadTemplate(trx, tenantId, templateId)
  })
}

function orderErrors(currentIds: string[], stepIds: string[]): FieldError[] {
  const known = new Set(currentIds)
  const seen = new Set<string>()
  const errors: FieldError[] = []
  stepIds.forEach((id, index) => {
    if (!known.has(id)) errors.push({ pointer: `/body/stepIds/${index}`, detail: `${id} is not a step of this template` })
    else if (seen.has(id)) errors.push({ pointer: `/body/stepIds/${index}`, detail: `${id} appears more than once` })
    seen.add(id)
  })
  const missing = currentIds.filter((id) => !seen.has(id))
  if (missing.length > 0) errors.push({ pointer: '/body/stepIds', detail: `misses step(s) ${missing.join(', ')}` })
  return errors
}
