import type { JsonObject } from '../../../db/database.js'
import type { FieldError } from '../../../errors.js'
import { fieldNameProblem, isRefusedFieldName } from '../../records/fields.js'
import { checkExpression } from '../expressions/check.js'
import type { StepDraft } from '../mapping.js'
import { isTemplate, templateErrors } from './email.js'
import { referenceErrors } from './graph.js'

/**
 * The settings of writeValues and decision steps beyond their schema, for a step saved at `position`
 * of a template that then has `count` steps: the kind's field is given (and other kinds leave it
 * null), expressions are valid where they stand, and branches point forward. In an inactive
 * template, a branch may name a step not added yet (templates are built in the order they run);
 * activation refuses it if it is still missing. In an active one, it must exist.
 */
export function decideSettingsErrors(draft: StepDraft, position: number, count: number, active: boolean): FieldError[] {
  const errors: FieldError[] = []
  const scope = { position, refersTo: draft.refersTo }
  for (const field of ['writeValues', 'decision'] as const) {
    if (draft.kind !== field && draft[field] !== null) {
      errors.push({ pointer: `/body/${field}`, detail: `a ${draft.kind} step has no ${field} settings: leave ${field} null` })
    }
  }
  if (draft.kind === 'decision') {
    const decision = draft.decision
    if (decision === null) return [...errors, { pointer: '/body/decision', detail: 'a decision step needs decision: {mode, condition, yes, no}' }]
    const condition = decision.condition ?? null
    if (decision.mode === 'automatic' && condition === null && decision.yes !== decision.no) {
      errors.push({ pointer: '/body/decision/condition', detail: 'an automatic decision needs a condition (or the same step for yes and no, a plain jump)' })
    }
    if (decision.mode === 'manual' && condition !== null) {
      errors.push({ pointer: '/body/decision/condition', detail: 'a manual decision is made by its assignee: leave condition out' })
    }
    if (condition !== null) {
      const checked = checkExpression(condition, scope, '/body/decision/condition')
      errors.push(...checked.errors)
      if (!['boolean', 'any'].includes(checked.type)) {
        errors.push({ pointer: '/body/decision/condition', detail: `must be true or false; this is a ${checked.type}` })
      }
    }
  }
  if (draft.kind === 'writeValues') {
    const writeValues = draft.writeValues
    if (writeValues === null) return [...errors, { pointer: '/body/writeValues', detail: 'a writeValues step needs writeValues: {values: [{record, field, value}]}' }]
    const seen = new Set<string>()
    writeValues.values.forEach((v, i) => {
      const at = `/body/writeValues/values/${i}`
      if (!draft.refersTo[v.record]) errors.push({ pointer: `${at}/record`, detail: `writes the ${v.record}: the step needs refersTo.${v.record}: true` })
      if (isRefusedFieldName(v.field)) errors.push({ pointer: `${at}/field`, detail: `${v.field} cannot be a field: a record refuses it (a PATCH with it answers 400)` })
      const nameProblem = fieldNameProblem(v.field)
      if (nameProblem) errors.push({ pointer: `${at}/field`, detail: `${v.field} cannot be a field: ${nameProblem}` })
      if (seen.has(`${v.record}.${v.field}`)) errors.push({ pointer: `${at}/field`, detail: `${v.record}.${v.field} is written twice` })
      seen.add(`${v.record}.${v.field}`)
      if (isTemplate(v.value)) errors.push(...templateErrors(v.value, `${at}/value`, draft.refersTo))
      else errors.push(...checkExpression(v.value, scope, `${at}/value`).errors)
    })
  }
  if (draft.kind === 'decision' || draft.kind === 'writeValues') {
    const settings = (draft.kind === 'decision' ? draft.decision : draft.writeValues) as unknown as JsonObject
    const references = referenceErrors({ position, kind: draft.kind, name: draft.name, settings }, active ? count : undefined)
    // An expression reading a later step is already named by checkExpression.
    errors.push(...references.filter((e) => e.pointer === '/decision/yes' || e.pointer === '/decision/no').map((e) => ({ pointer: `/body${e.pointer}`, detail: e.detail })))
  }
  return errors
}
