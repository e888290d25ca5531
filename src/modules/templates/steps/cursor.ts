import { badRequest } from '../../../errors.js'
import { pageRequest, type PageRequest } from '../../../lib/pagination.js'

/**
 * A page of a template's steps ends at a step; the next page goes on after it. Steps are ordered by
 * a position that closes its gaps, so the cursor keeps the step's id (its place now, after steps were
 * added or removed before it) and its position when the page was sent (where it was, should it have
 * been deleted since), and the template it belongs to, as a position means nothing in another one.
 */
export interface StepsPageRequest extends PageRequest {
  /** The position the step named by `after` had when the cursor was issued; unknown for a cursor of the former kind. */
  position?: number | undefined
}

const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
const STEPS_CURSOR = new RegExp(`^s1:(${UUID}):([1-9][0-9]{0,8}):(${UUID})$`)

export function encodeStepsCursor(step: { templateId: string; id: string; position: number }): string {
  return Buffer.from(`s1:${step.templateId}:${step.position}:${step.id}`).toString('base64url')
}

/** A cursor of the former kind (the step's id alone, from before an update) still reads as one. */
export function stepsPageRequest(templateId: string, query: { limit?: number | undefined; cursor?: string | undefined }): StepsPageRequest {
  const match = query.cursor === undefined ? null : STEPS_CURSOR.exec(Buffer.from(query.cursor, 'base64url').toString())
  if (!match) return pageRequest(query)
  const [, cursorTemplateId, position, stepId] = match
  if (cursorTemplateId !== templateId.toLowerCase()) {
    throw badRequest('The cursor is from the steps of another template.', [{ pointer: '/querystring/cursor', detail: 'cursor of another list' }])
  }
  return { ...pageRequest({ limit: query.limit }), after: stepId, position: Number(position) }
}
