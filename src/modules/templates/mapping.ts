import type { JsonObject, TemplateRow, TemplateStepRow } from '../../db/database.js'
import type { Template, TemplateSummary } from './templates/schemas.js'
import type { Responsibility, Start, Step } from './steps/schemas.js'
import { emailSettingsOf } from './steps/email.js'
import type { Decision, WriteValues } from './steps/decision-schemas.js'
import { followUpOf, followUpSettings } from './steps/follow-up.js'
import { autostartOf } from '../autostart/settings.js'

/** A step's editable content, before it has a place in a template. */
export type StepDraft = Omit<Step, 'id' | 'templateId' | 'position' | 'version'>

type TemplateFields = Omit<TemplateSummary, 'stepCount'>

function templateFields(row: TemplateRow): TemplateFields {
  return {
    id: row.id,
    name: row.name,
    description: row.description,
    active: row.active,
    controllerUserId: row.controller_user_id,
    notifyOnCompletion: row.notify_on_completion,
    autostart: autostartOf(row.autostart),
    version: row.version,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString()
  }
}

export function toTemplate(row: TemplateRow, steps: TemplateStepRow[]): Template {
  return { ...templateFields(row), steps: steps.map(toStep) }
}

export function toTemplateSummary(row: TemplateRow & { step_count: number }): TemplateSummary {
  return { ...templateFields(row), stepCount: row.step_count }
}

export function toStep(row: TemplateStepRow): Step {
  return {
    id: row.id,
    templateId: row.template_id,
    position: row.position,
    kind: row.kind,
    name: row.name,
    start: row.start_mode === 'daysAfterPrevious' ? { mode: 'daysAfterPrevious', days: row.start_days ?? 0 } : { mode: 'afterPrevious' },
    responsibility: row.responsibility === 'user' ? { user: row.responsible_user_id ?? '' } : row.responsibility,
    deadlineDays: row.deadline_days,
    refersTo: { property: row.refers_to_property, address: row.refers_to_address },
    serviceId: row.service_id,
    target: row.target_url !== null && row.target_delivery !== null ? { url: row.target_url, delivery: row.target_delivery } : null,
    parameters: row.parameters,
    email: row.kind === 'email' ? emailSettingsOf(row.settings) : null,
    writeValues: row.kind === 'writeValues' ? row.settings as WriteValues : null,
    decision: row.kind === 'decision' ? row.settings as Decision : null,
    followUp: followUpOf(row),
    version: row.version
  }
}

/** The template_steps columns that hold a draft; the target's sealed secret is the caller's to add. */
export function stepColumns(draft: StepDraft) {
  return {
    kind: draft.kind,
    name: draft.name,
    ...startColumns(draft.start),
    ...responsibilityColumns(draft.responsibility),
    deadline_days: draft.deadlineDays,
    refers_to_property: draft.refersTo.property,
    refers_to_address: draft.refersTo.address,
    service_id: draft.serviceId,
    target_url: draft.target?.url ?? null,
    target_delivery: draft.target?.delivery ?? null,
    parameters: JSON.stringify(draft.parameters),
    settings: JSON.stringify(settingsOf(draft))
  }
}

/** The kind's own settings as template_steps.settings holds them (src/modules/templates/steps/kinds.ts). */
function settingsOf(draft: StepDraft): JsonObject {
  switch (draft.kind) {
    case 'email':
      return draft.email ? { ...draft.email } : {}
    case 'writeValues':
      return (draft.writeValues ?? {}) as JsonObject
    case 'decision':
      return (draft.decision ?? {}) as JsonObject
    case 'followUpProcess':
      return followUpSettings(draft.followUp)
    default:
      return {}
  }
}

function startColumns(start: Start) {
  return start.mode === 'daysAfterPrevious'
    ? { start_mode: start.mode, start_days: start.days }
    : { start_mode: start.mode, start_days: null }
}

function responsibilityColumns(responsibility: Responsibility) {
  return typeof responsibility === 'string'
    ? { responsibility, responsible_user_id: null }
    : { responsibility: 'user' as const, responsible_user_id: responsibility.user }
}
