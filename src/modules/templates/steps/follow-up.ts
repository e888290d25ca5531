import type { DB } from '../../../db/connect.js'
import type { JsonObject, StepKind } from '../../../db/database.js'
import type { FieldError } from '../../../errors.js'
import { kindPhrase } from './kinds.js'
import type { FollowUp, FollowUpInput } from './schemas.js'

/*
 * The followUpProcess step: its settings ({templateId, waitForCompletion} in template_steps.settings,
 * the API's `followUp` field), and what saving one checks. Its runner is
 * src/scheduler/automatic-steps/follow-up.ts.
 */

export function followUpInput(input: FollowUpInput | undefined): FollowUp | null | undefined {
  if (input === undefined || input === null) return input
  return { templateId: input.templateId, waitForCompletion: input.waitForCompletion ?? false }
}

/** The settings column of a followUpProcess step. */
export function followUpSettings(followUp: FollowUp | null): JsonObject {
  return followUp ? { templateId: followUp.templateId, waitForCompletion: followUp.waitForCompletion } : {}
}

/** The API's `followUp` field of a template or instance step; null for other kinds. */
export function followUpOf(row: { kind: StepKind; settings: JsonObject }): FollowUp | null {
  if (row.kind !== 'followUpProcess' || typeof row.settings.templateId !== 'string') return null
  return { templateId: row.settings.templateId, waitForCompletion: row.settings.waitForCompletion === true }
}

/**
 * A followUpProcess step names a template of the same tenant other than its own (whether that one is
 * active, and whether the process will have the records its steps refer to, is checked when the step
 * runs: both can change until then). Other kinds take no followUp.
 */
export async function followUpErrors(
  db: DB, tenantId: string, ownTemplateId: string, draft: { kind: StepKind; followUp: FollowUp | null }
): Promise<FieldError[]> {
  if (draft.kind !== 'followUpProcess') {
    return draft.followUp === null ? [] : [{ pointer: '/body/followUp', detail: `${kindPhrase(draft.kind)} starts no process: leave followUp null` }]
  }
  if (draft.followUp === null) return [{ pointer: '/body/followUp', detail: 'a followUpProcess step needs followUp: {"templateId": …}' }]
  const { templateId } = draft.followUp
  if (templateId === ownTemplateId) {
    return [{ pointer: '/body/followUp/templateId', detail: 'a step cannot start a process of its own template' }]
  }
  const exists = await db.selectFrom('process_templates').select('id').where('tenant_id', '=', tenantId).where('id', '=', templateId).executeTakeFirst()
  return exists ? [] : [{ pointer: '/body/followUp/templateId', detail: `template ${templateId} does not exist` }]
}
