import type { TargetPolicy } from '../../../adapters/address-policy.js'
import type { Clock } from '../../../adapters/clock.js'
import type { DB } from '../../../db/connect.js'
import { badRequest, conflict, notFound, type FieldError } from '../../../errors.js'
import { newId } from '../../../lib/ids.js'
import { encodeCursor, toPage, type PageRequest, type PageResult } from '../../../lib/pagination.js'
import { secretContext, type SecretBox } from '../../../lib/secret-box.js'
import { refuseBlankNames } from '../../../lib/blank-names.js'
import { changesNothing } from '../../../lib/changes.js'
import { checkVersion, type ExpectedVersions } from '../../../lib/versioning.js'
import { stepColumns, toStep, type StepDraft } from '../mapping.js'
import * as repo from '../templates/repository.js'
import { lockedTemplate, touchTemplate } from '../templates/service.js'
import * as steps from './repository.js'
import { MAX_TEMPLATE_STEPS, type CreateStep, type Step, type Target, type TargetInput, type UpdateStep } from './schemas.js'
import { checkStep, rejectIfInvalid } from './validation.js'
import { decideSettingsErrors } from './decision-validation.js'
import { deleteErrors, moveTemplateReferences, unreachableErrors, unreachableStepIds } from './references.js'
import { followUpInput } from './follow-up.js'

async function findStepOrThrow(db: DB, tenantId: string, templateId: string, stepId: string) {
  const row = await steps.findStep(db, tenantId, templateId, stepId)
  if (!row) throw notFound('Step', stepId)
  return row
}

/** What storing a free target needs: the policy its URL must pass, and the box its secret is sealed in. */
export interface TargetGuard {
  secrets: SecretBox
  targets: TargetPolicy
}

function targetOf(input: NonNullable<TargetInput>): Target {
  return { url: input.url, delivery: input.delivery ?? 'query' }
}

/** The target_secret column: the given secret sealed, the stored one while the target stays, or none. */
function sealedSecret(guard: TargetGuard, tenantId: string, draft: StepDraft, given: TargetInput | undefined, stored: string | null): string | null {
  if (draft.target === null) return null
  if (!given) return stored
  return guard.secrets.seal(given.secret, secretContext.stepTarget(tenantId, given.url))
}

function draftOf(input: CreateStep): StepDraft {
  return {
    kind: input.kind,
    name: input.name,
    start: input.start ?? { mode: 'afterPrevious' },
    responsibility: input.responsibility ?? 'processResponsible',
    deadlineDays: input.deadlineDays ?? null,
    refersTo: { property: input.refersTo?.property ?? false, address: input.refersTo?.address ?? false },
    serviceId: input.serviceId ?? null,
    target: input.target ? targetOf(input.target) : null,
    parameters: input.parameters ?? {},
    email: input.email ?? null,
    writeValues: input.writeValues ?? null,
    decision: input.decision ?? null,
    followUp: followUpInput(input.followUp) ?? null
  }
}

/** The fields only some kinds have, as a step of any other kind holds them. */
const NO_KIND_SETTINGS = {
  serviceId: null, target: null, parameters: {}, email: null, writeValues: null, decision: null, followUp: null
} as const satisfies Partial<StepDraft>

function mergedDraft(current: Step, input: UpdateStep): StepDraft {
  const { id: _id, templateId: _templateId, position: _position, version: _version, ...draft } = current
  const { refersTo, target, followUp, ...changes } = input
  const targetChange = target === undefined ? {} : { target: target === null ? null : targetOf(target) }
  // A step that changes its kind drops the settings of its former kind (a webhook's service, target and
  // parameters, the target's secret with them; another kind's own field), unless the request gives them:
  // then the new kind's rules refuse them with a pointer, as they would on a new step of that kind.
  const kindChange = input.kind === undefined || input.kind === current.kind ? {} : NO_KIND_SETTINGS
  const followUpChange = followUp === undefined ? {} : { followUp: followUpInput(followUp) ?? null }
  return { ...draft, ...kindChange, ...changes, ...targetChange, ...followUpChange, refersTo: { ...draft.refersTo, ...refersTo } }
}

function positionErrors(position: number, stepCount: number): FieldError[] {
  if (position <= stepCount + 1) return []
  return [{ pointer: '/body/position', detail: `must be between 1 and ${stepCount + 1}: the template has ${stepCount} step(s)` }]
}

/** Adds a step; `expected`: the template versions If-Match names (its order, in which `position` counts), 412 otherwise. */
export async function createStep(
  db: DB, clock: Clock, guard: TargetGuard, tenantId: string, templateId: string, input: CreateStep, expected: ExpectedVersions
): Promise<Step> {
  refuseBlankNames(input, ['name'])
  return db.transaction().execute(async (trx) => {
    const template = await lockedTemplate(trx, tenantId, templateId)
    checkVersion(expected, template.version, `Process template ${templateId}`)
    const stepCount = await steps.countSteps(trx, tenantId, templateId)
    if (stepCount >= MAX_TEMPLATE_STEPS) {
      throw conflict(`Process template ${templateId} has ${stepCount} steps, as many as a template may have; remove a step first.`)
    }
    const position = input.position ?? stepCount + 1
    const draft = draftOf(input)
    const check = await checkStep(trx, tenantId, draft, { policy: guard.targets, secret: input.target?.secret }, templateId)
    rejectIfInvalid('The step is not valid', [...positionErrors(position, stepCount), ...check.errors, ...decideSettingsErrors(draft, position, stepCount + 1, template.active)])
    const stranded = template.active ? await unreachableStepIds(trx, tenantId, templateId) : new Set<string>()
    const shifted = await steps.shiftPositions(trx, tenantId, templateId, position, 1)
    // Branches and step references of the steps that moved follow them.
    if (position <= stepCount) await moveTemplateReferences(trx, tenantId, templateId, (p) => (p >= position ? p + 1 : p), shifted)
    const now = clock.now()
    const row = await steps.insertStep(trx, {
      ...stepColumns({ ...draft, parameters: check.parameters }),
      target_secret: sealedSecret(guard, tenantId, draft, input.target, null),
      tenant_id: tenantId, id: newId(), template_id: templateId, position, created_at: now, updated_at: now
    })
    if (template.active) rejectIfInvalid('The step is not valid', await unreachableErrors(trx, tenantId, templateId, '/body/position', stranded))
    await touchTemplate(trx, clock, tenantId, templateId)
    return toStep(row)
  })
}

/**
 * A page of a template's steps ends at a step; the next page goes on after it. Steps are ordered by a
 * position that closes its gaps, so the cursor keeps the step's id (its place now, after steps were
 * added or removed before it) and the id of the step that came next (where the page goes on, should
 * the last step have been deleted since): see steps.listStepsAfter.
 */
export async function listSteps(db: DB, tenantId: string, templateId: string, page: PageRequest): Promise<PageResult<Step>> {
  if (!(await repo.findTemplate(db, tenantId, templateId))) throw notFound('Process template', templateId)
  const place = page.after === undefined ? undefined : { after: page.after, next: page.next, position: page.position }
  const rows = await steps.listStepsAfter(db, tenantId, templateId, place, page.limit + 1)
  if (place && rows.length === 0 && place.position === undefined && await isStale(db, tenantId, templateId, place)) {
    throw badRequest('The cursor names steps that no longer exist: list the steps again.', [{ pointer: '/querystring/cursor', detail: 'stale cursor' }])
  }
  const result = toPage(rows, page, toStep)
  const last = result.items.at(-1)
  const next = rows[result.items.length]
  return { ...result, nextCursor: result.nextCursor !== null && last && next ? encodeCursor(page.list, last.id, last.position, next.id) : null }
}

/** A cursor without the last step's position (from before it carried one) whose steps are gone: nowhere to go on from. */
async function isStale(db: DB, tenantId: string, templateId: string, place: steps.StepsPlace): Promise<boolean> {
  for (const id of [place.after, place.next]) {
    if (id !== undefined && await steps.findStep(db, tenantId, templateId, id)) return false
  }
  return true
}

export async function getStep(db: DB, tenantId: string, templateId: string, stepId: string): Promise<Step> {
  return toStep(await findStepOrThrow(db, tenantId, templateId, stepId))
}

export async function updateStep(
  db: DB, clock: Clock, guard: TargetGuard, tenantId: string, templateId: string, stepId: string, input: UpdateStep, expected: ExpectedVersions
): Promise<Step> {
  refuseBlankNames(input, ['name'])
  return db.transaction().execute(async (trx) => {
    const template = await lockedTemplate(trx, tenantId, templateId)
    const current = await findStepOrThrow(trx, tenantId, templateId, stepId)
    checkVersion(expected, current.version, `Step ${stepId}`)
    const draft = mergedDraft(toStep(current), input)
    const check = await checkStep(trx, tenantId, draft, { policy: guard.targets, secret: input.target?.secret }, templateId, toStep(current))
    const stepCount = await steps.countSteps(trx, tenantId, templateId)
    rejectIfInvalid('The step is not valid', [...check.errors, ...decideSettingsErrors(draft, current.position, stepCount, template.active)])
    // A target's secret is sealed and write-only: one sent is a change, as it cannot be compared.
    if (!input.target && changesNothing(toStep(current), { ...draft, parameters: check.parameters })) return toStep(current)
    const stranded = template.active ? await unreachableStepIds(trx, tenantId, templateId) : new Set<string>()
    const row = await steps.updateStep(trx, tenantId, stepId, {
      ...stepColumns({ ...draft, parameters: check.parameters }),
      target_secret: sealedSecret(guard, tenantId, draft, input.target, current.target_secret),
      updated_at: clock.now()
    })
    if (template.active) {
      rejectIfInvalid('The step is not valid', await unreachableErrors(trx, tenantId, templateId, draft.kind === 'decision' ? '/body/decision' : '/body/kind', stranded))
    }
    // The template's answer holds its steps: its version (its ETag) moves with any change to one, or a
    // client polling it with If-None-Match would be told its copy is current (304) when it is not.
    await touchTemplate(trx, clock, tenantId, templateId)
    return toStep(row)
  })
}

export async function deleteStep(
  db: DB, clock: Clock, tenantId: string, templateId: string, stepId: string, expected: ExpectedVersions
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const template = await lockedTemplate(trx, tenantId, templateId)
    const current = await findStepOrThrow(trx, tenantId, templateId, stepId)
    checkVersion(expected, current.version, `Step ${stepId}`)
    const all = await steps.listSteps(trx, tenantId, templateId)
    if (template.active && all.length === 1) {
      throw conflict(`Step ${stepId} is the only step of active template ${templateId}: deactivate the template or add another step first.`)
    }
    rejectIfInvalid(`Step ${current.position} "${current.name}" cannot be deleted`, deleteErrors(all, current.position))
    const stranded = template.active ? await unreachableStepIds(trx, tenantId, templateId, all) : new Set<string>()
    await steps.deleteStep(trx, tenantId, stepId)
    const shifted = await steps.shiftPositions(trx, tenantId, templateId, current.position + 1, -1)
    await moveTemplateReferences(trx, tenantId, templateId, (p) => (p > current.position ? p - 1 : p), shifted)
    if (template.active) rejectIfInvalid(`Step ${current.position} "${current.name}" cannot be deleted`, await unreachableErrors(trx, tenantId, templateId, '/params/stepId', stranded))
    await touchTemplate(trx, clock, tenantId, templateId)
  })
}
