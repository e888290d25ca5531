import { isDeepStrictEqual } from 'node:util'
import type { Clock } from '../../../adapters/clock.js'
import type { DB } from '../../../db/connect.js'
import { conflict, notFound, unprocessable } from '../../../errors.js'
import { newId } from '../../../lib/ids.js'
import { toPage, type PageRequest } from '../../../lib/pagination.js'
import { refuseBlankNames } from '../../../lib/blank-names.js'
import { changesNothing } from '../../../lib/changes.js'
import { checkVersion, type ExpectedVersions } from '../../../lib/versioning.js'
import { holdTenantUser } from '../../users/repository.js'
import { autostartColumn, autostartErrors, autostartOf, dateWatch } from '../../autostart/settings.js'
import { toTemplate, toTemplateSummary } from '../mapping.js'
import * as repo from './repository.js'
import type { CopyTemplate, CreateTemplate, ListTemplatesQuery, Template, UpdateTemplate } from './schemas.js'
import * as steps from '../steps/repository.js'
import { activationErrors, rejectIfInvalid } from '../steps/validation.js'

const MAX_NAME = 200

/** The template row, locked until the transaction ends; 404 when the tenant has no such template. */
export async function lockedTemplate(trx: DB, tenantId: string, id: string) {
  const row = await repo.lockTemplate(trx, tenantId, id)
  if (!row) throw notFound('Process template', id)
  return row
}

export async function loadTemplate(db: DB, tenantId: string, id: string): Promise<Template> {
  const row = await repo.findTemplate(db, tenantId, id)
  if (!row) throw notFound('Process template', id)
  return toTemplate(row, await steps.listSteps(db, tenantId, id))
}

/** Run in the transaction that writes the template: it holds the controller until then (holdTenantUser). */
async function checkController(db: DB, tenantId: string, userId: string | null | undefined): Promise<void> {
  if (!userId || (await holdTenantUser(db, tenantId, userId))) return
  throw unprocessable(`The controller ${userId} is not a user of this tenant.`, [
    { pointer: '/body/controllerUserId', detail: `user ${userId} does not exist` }
  ])
}

export async function createTemplate(db: DB, clock: Clock, tenantId: string, input: CreateTemplate): Promise<Template> {
  refuseBlankNames(input, ['name'])
  // In a transaction: the autostart's responsible user stays held until the template is written.
  return db.transaction().execute((trx) => insertTemplate(trx, clock, tenantId, input))
}

async function insertTemplate(db: DB, clock: Clock, tenantId: string, input: CreateTemplate): Promise<Template> {
  await checkController(db, tenantId, input.controllerUserId)
  rejectIfInvalid('The autostart is not valid', await autostartErrors(db, tenantId, input.autostart))
  const now = clock.now()
  const row = await repo.insertTemplate(db, {
    tenant_id: tenantId,
    id: newId(),
    name: input.name,
    description: input.description ?? '',
    active: false,
    controller_user_id: input.controllerUserId ?? null,
    notify_on_completion: input.notifyOnCompletion ?? false,
    autostart: autostartColumn(input.autostart) ?? null,
    created_at: now,
    updated_at: now
  })
  return toTemplate(row, [])
}

export const getTemplate = loadTemplate

export async function listTemplates(db: DB, tenantId: string, page: PageRequest, filter: Pick<ListTemplatesQuery, 'active' | 'q'>) {
  return toPage(await repo.listTemplates(db, tenantId, page, filter), page, toTemplateSummary)
}

export async function updateTemplate(
  db: DB, clock: Clock, tenantId: string, id: string, input: UpdateTemplate, expected: ExpectedVersions
): Promise<Template> {
  refuseBlankNames(input, ['name'])
  return db.transaction().execute(async (trx) => {
    const current = await lockedTemplate(trx, tenantId, id)
    checkVersion(expected, current.version, `Process template ${id}`)
    await checkController(trx, tenantId, input.controllerUserId)
    rejectIfInvalid('The autostart is not valid', await autostartErrors(trx, tenantId, input.autostart))
    if (input.active === true) {
      const templateSteps = await steps.listSteps(trx, tenantId, id)
      rejectIfInvalid('The template cannot be activated', await activationErrors(trx, tenantId, templateSteps))
    }
    // A dateReached autostart that starts watching (activated, or watching other dates) begins with today's, not the days before.
    const watchesAnew = (input.active === true && !current.active)
      || (input.autostart !== undefined && !isDeepStrictEqual(dateWatch(input.autostart), dateWatch(autostartOf(current.autostart))))
    const changes = {
      name: input.name,
      description: input.description,
      active: input.active,
      controller_user_id: input.controllerUserId,
      notify_on_completion: input.notifyOnCompletion
    }
    if (changesNothing(current, { ...changes, autostart: input.autostart })) return loadTemplate(trx, tenantId, id)
    await repo.updateTemplate(trx, tenantId, id, {
      ...changes,
      autostart: autostartColumn(input.autostart),
      dates_checked_through: watchesAnew ? await repo.dayBeforeIn(trx, tenantId, clock.now()) : undefined,
      updated_at: clock.now()
    })
    return loadTemplate(trx, tenantId, id)
  })
}

export async function deleteTemplate(db: DB, tenantId: string, id: string, expected: ExpectedVersions): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const current = await lockedTemplate(trx, tenantId, id)
    checkVersion(expected, current.version, `Process template ${id}`)
    const instances = await repo.countInstancesOfTemplate(trx, tenantId, id)
    if (instances > 0) {
      throw conflict(`${instances} process instance(s) were started from template ${id}, so it cannot be deleted; deactivate it instead.`)
    }
    await repo.deleteTemplate(trx, tenantId, id)
  })
}

/** "Copy of <name>", cut to the characters a name may have: whole characters, as the schema counts them, never half a surrogate pair. */
function copyName(name: string): string {
  return [...`Copy of ${name}`].slice(0, MAX_NAME).join('')
}

/** Copies a template with its steps; `expected`: the source versions If-Match names (the template the client saw), 412 otherwise. */
export async function copyTemplate(db: DB, clock: Clock, tenantId: string, id: string, input: CopyTemplate, expected: ExpectedVersions): Promise<Template> {
  refuseBlankNames(input, ['name'])
  return db.transaction().execute(async (trx) => {
    const source = await lockedTemplate(trx, tenantId, id)
    checkVersion(expected, source.version, `Process template ${id}`)
    const sourceSteps = await steps.listSteps(trx, tenantId, id)
    const now = clock.now()
    const copy = await repo.insertTemplate(trx, {
      tenant_id: tenantId,
      id: newId(),
      name: input.name ?? copyName(source.name),
      description: source.description,
      active: false,
      controller_user_id: source.controller_user_id,
      notify_on_completion: source.notify_on_completion,
      autostart: source.autostart === null ? null : JSON.stringify(source.autostart),
      created_at: now,
      updated_at: now
    })
    await steps.insertSteps(trx, sourceSteps.map((step) => ({
      ...step, id: newId(), template_id: copy.id, version: 1, created_at: now, updated_at: now,
      parameters: JSON.stringify(step.parameters)
    })))
    return loadTemplate(trx, tenantId, copy.id)
  })
}

/** Marks a change to the template's steps (their set, order or settings): the template's answer holds them, so its version moves on. */
export async function touchTemplate(trx: DB, clock: Clock, tenantId: string, id: string): Promise<void> {
  await repo.updateTemplate(trx, tenantId, id, { updated_at: clock.now() })
}
