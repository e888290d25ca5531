import type { Clock } from '../../../adapters/clock.js'
import type { DB } from '../../../db/connect.js'
import { badRequest, conflict, notFound, type FieldError } from '../../../errors.js'
import { newId } from '../../../lib/ids.js'
import { toPage, type PageRequest, type PageResult } from '../../../lib/pagination.js'
import { checkVersion } from '../../../lib/versioning.js'
import { stepColumns, toStep, type StepDraft } from '../mapping.js'
import * as repo from '../templates/repository.js'
import { lockedTemplate, touchTemplate } from '../templates/service.js'
import * as steps from './repository.js'
import type { CreateStep, Step, UpdateStep } from './schemas.js'
import { checkStep, rejectIfInvalid } from './validation.js'

async function findStepOrThrow(db: DB, tenantId: string, templateId: string, stepId: string) {
  const row = await steps.findStep(db, tenantId, templateId, stepId)
  if (!row) throw notFound('Step', stepId)
  return row
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
    parameters: input.parameters ?? {}
  }
}

function mergedDraft(current: Step, input: UpdateStep): StepDraft {
  const { id: _id, templateId: _templateId, position: _position, version: _version, ...draft } = current
  const { refersTo, ...changes } = input
  return { ...draft, ...changes, refersTo: { ...draft.refersTo, ...refersTo } }
}

function positionErrors(position: number, stepCount: number): FieldError[] {
  if (position <= stepCount + 1) return []
  return [{ pointer: '/body/position', detail: `must be between 1 and ${stepCount + 1}: the template has ${stepCount} step(s)` }]
}

export async function createStep(db: DB, clock: Clock, tenantId: string, templateId: string, input: CreateStep): Promise<Step> {
  return db.transaction().execute(async (trx) => {
    await lockedTemplate(trx, tenantId, templateId)
    const stepCount = await steps.countSteps(trx, tenantId, templateId)
    const position = input.position ?? stepCount + 1
    const draft = draftOf(input)
    const check = await checkStep(trx, tenantId, draft)
    rejectIfInvalid('The step is not valid', [...positionErrors(position, stepCount), ...check.errors])
    await steps.shiftPositions(trx, tenantId, templateId, position, 1)
    const now = clock.now()
    const row = await steps.insertStep(trx, {
      ...stepColumns({ ...draft, parameters: check.parameters }),
      tenant_id: tenantId, id: newId(), template_id: templateId, position, created_at: now, updated_at: now
    })
    await touchTemplate(trx, clock, tenantId, templateId)
    return toStep(row)
  })
}

export async function listSteps(db: DB, tenantId: string, templateId: string, page: PageRequest): Promise<PageResult<Step>> {
  if (!(await repo.findTemplate(db, tenantId, templateId))) throw notFound('Process template', templateId)
  const after = page.after === undefined ? 0 : await cursorPosition(db, tenantId, templateId, page.after)
  return toPage(await steps.listStepsAfter(db, tenantId, templateId, after, page.limit + 1), page, toStep)
}

async function cursorPosition(db: DB, tenantId: string, templateId: string, stepId: string): Promise<number> {
  const row = await steps.findStep(db, tenantId, templateId, stepId)
  if (!row) throw badRequest('The cursor names a step that no longer exists: list the steps again.', [{ pointer: '/querystring/cursor', detail: 'stale cursor' }])
  return row.position
}

export async function getStep(db: DB, tenantId: string, templateId: string, stepId: string): Promise<Step> {
  return toStep(await findStepOrThrow(db, tenantId, templateId, stepId))
}

export async function updateStep(
  db: DB, clock: Clock, tenantId: string, templateId: string, stepId: string, input: UpdateStep, expected: number | undefined
): Promise<Step> {
  return db.transaction().execute(async (trx) => {
    await lockedTemplate(trx, tenantId, templateId)
    const current = await findStepOrThrow(trx, tenantId, templateId, stepId)
    checkVersion(expected, current.version, `Step ${stepId}`)
    const draft = mergedDraft(toStep(current), input)
    const check = await checkStep(trx, tenantId, draft)
    rejectIfInvalid('The step is not valid', check.errors)
    const row = await steps.updateStep(trx, tenantId, stepId, { ...stepColumns({ ...draft, parameters: check.parameters }), updated_at: clock.now() })
    return toStep(row)
  })
}

export async function deleteStep(
  db: DB, clock: Clock, tenantId: string, templateId: string, stepId: string, expected: number | undefined
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const template = await lockedTemplate(trx, tenantId, templateId)
    const current = await findStepOrThrow(trx, tenantId, templateId, stepId)
    checkVersion(expected, current.version, `Step ${stepId}`)
    if (template.active && (await steps.countSteps(trx, tenantId, templateId)) === 1) {
      throw conflict(`Step ${stepId} is the only step of active template ${templateId}: deactivate the template or add another step first.`)
    }
    await steps.deleteStep(trx, tenantId, stepId)
    await steps.shiftPositions(trx, tenantId, templateId, current.position + 1, -1)
    await touchTemplate(trx, clock, tenantId, templateId)
  })
}
