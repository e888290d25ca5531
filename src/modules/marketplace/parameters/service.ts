import type { Clock } from '../../../adapters/clock.js'
import type { DB } from '../../../db/connect.js'
import type { ParameterRow } from '../../../db/database.js'
import { conflict, notFound, unprocessable } from '../../../errors.js'
import { refuseBlankNames } from '../../../lib/blank-names.js'
import { changesNothing } from '../../../lib/changes.js'
import { newId } from '../../../lib/ids.js'
import { toPage, type PageRequest } from '../../../lib/pagination.js'
import * as repo from './repository.js'
import { definitionErrors } from './rules.js'
import { MAX_SERVICE_PARAMETERS, type CreateParameter, type ParameterDefinition, type UpdateParameter, type WebhookParameter } from './schemas.js'
import { findProcessesUsing, findTemplatesUsing, lockService } from '../services/repository.js'
import { findVisibleService, nameTemplates } from '../services/service.js'

function toParameter(row: ParameterRow): WebhookParameter {
  return {
    id: row.id,
    serviceId: row.service_id,
    name: row.name,
    label: row.label,
    type: row.type,
    allowedValues: row.allowed_values ?? null,
    required: row.required,
    default: (row.default_value ?? null) as WebhookParameter['default']
  }
}

function toValues(definition: ParameterDefinition): repo.ParameterValues {
  const { allowedValues, default: defaultValue, ...rest } = definition
  return { ...rest, allowed_values: allowedValues, default_value: defaultValue }
}

function checkDefinition(definition: ParameterDefinition): void {
  const errors = definitionErrors(definition)
  if (errors.length > 0) throw unprocessable(`The parameter definition "${definition.name}" breaks a rule.`, errors)
}

async function checkNameFree(db: DB, serviceId: string, name: string, parameterId?: string): Promise<void> {
  const owner = await repo.findParameterNamed(db, serviceId, name)
  if (owner && owner.id !== parameterId) throw conflict(`The service already has a parameter named "${owner.name}".`)
}

/**
 * Runs a write of the service's parameters with the service locked (lockService): step writes that
 * pass its parameters check them before or after it, never halfway, and two writes of its parameters
 * check each other's names in turn.
 */
function withServiceLocked<T>(db: DB, serviceId: string, write: (trx: DB) => Promise<T>): Promise<T> {
  return db.transaction().execute(async (trx) => {
    if (!(await lockService(trx, serviceId))) throw notFound('Marketplace service', serviceId)
    return write(trx)
  })
}

export async function createParameter(db: DB, clock: Clock, serviceId: string, input: CreateParameter): Promise<WebhookParameter> {
  refuseBlankNames(input, ['label'])
  const definition: ParameterDefinition = {
    name: input.name,
    label: input.label ?? input.name,
    type: input.type,
    allowedValues: input.allowedValues ?? null,
    required: input.required ?? false,
    default: input.default ?? null
  }
  return withServiceLocked(db, serviceId, async (trx) => {
    checkDefinition(definition)
    await checkNameFree(trx, serviceId, definition.name)
    const count = await repo.countParameters(trx, serviceId)
    if (count >= MAX_SERVICE_PARAMETERS) {
      throw conflict(`The service has ${count} parameters, as many as a service may have; delete one first.`)
    }
    await checkPassedWhereRequired(trx, serviceId, definition)
    return toParameter(await repo.insertParameter(trx, { service_id: serviceId, id: newId() }, toValues(definition), clock.now()))
  })
}

export async function listParameters(db: DB, tenantId: string | undefined, serviceId: string, page: PageRequest) {
  await findVisibleService(db, tenantId, serviceId)
  return toPage(await repo.listParameters(db, serviceId, page), page, toParameter)
}

export async function getParameter(db: DB, tenantId: string | undefined, serviceId: string, id: string): Promise<WebhookParameter> {
  await findVisibleService(db, tenantId, serviceId)
  const row = await repo.findParameter(db, serviceId, id)
  if (!row) throw notFound('Parameter', id)
  return toParameter(row)
}

export async function updateParameter(
  db: DB, clock: Clock, serviceId: string, id: string, input: UpdateParameter
): Promise<WebhookParameter> {
  refuseBlankNames(input, ['label'])
  return withServiceLocked(db, serviceId, async (trx) => {
    const current = await getParameter(trx, undefined, serviceId, id)
    const next = merge(current, input)
    checkDefinition(next)
    await checkNameFree(trx, serviceId, next.name, id)
    const change = breakingChange(current, next)
    if (change) await checkUnused(trx, current, `${change} would break them`, `${change} would break their calls`)
    if (!(current.required && current.default === null)) await checkPassedWhereRequired(trx, serviceId, next)
    if (changesNothing(current, next)) return current
    const row = await repo.updateParameter(trx, serviceId, id, toValues(next), clock.now())
    if (!row) throw notFound('Parameter', id)
    return toParameter(row)
  })
}

export async function deleteParameter(db: DB, serviceId: string, id: string): Promise<void> {
  await withServiceLocked(db, serviceId, async (trx) => {
    const current = await getParameter(trx, undefined, serviceId, id)
    await checkUnused(trx, current, 'remove it from those steps first', 'their calls would carry it still')
    if (!(await repo.deleteParameter(trx, serviceId, id))) throw notFound('Parameter', id)
  })
}

function merge(current: WebhookParameter, input: UpdateParameter): ParameterDefinition {
  const type = input.type ?? current.type
  return {
    name: input.name ?? current.name,
    label: input.label ?? current.label,
    type,
    // Leaving the enum type drops its values unless the caller sends some.
    allowedValues: input.allowedValues !== undefined ? input.allowedValues : type === 'enum' ? current.allowedValues : null,
    required: input.required ?? current.required,
    default: input.default !== undefined ? input.default : current.default
  }
}

/** A change that would make values existing steps pass invalid. */
function breakingChange(current: WebhookParameter, next: ParameterDefinition): string | undefined {
  if (next.name !== current.name) return 'renaming it'
  if (next.type !== current.type) return 'changing its type'
  const removed = (current.allowedValues ?? []).filter((value) => !(next.allowedValues ?? []).includes(value))
  if (removed.length > 0) return `removing the allowed values ${removed.map((v) => `"${v}"`).join(', ')}`
  return undefined
}

/**
 * A parameter required without a default must be passed by every step that calls the service: a step
 * saved without it (before the parameter was added, or while it was optional) would call without it,
 * which its save would now refuse (SPEC §3: a missing required parameter is a 422 when the step is saved).
 */
async function checkPassedWhereRequired(db: DB, serviceId: string, parameter: ParameterDefinition): Promise<void> {
  if (!parameter.required || parameter.default !== null) return
  const templates = await findTemplatesUsing(db, { serviceId, lacking: parameter.name })
  if (templates.length > 0) {
    throw conflict(`Parameter "${parameter.name}" cannot be required without a default: steps of ${nameTemplates(templates)} call the service ` +
      'without it. Give it a default, or add it to those steps first.')
  }
  // A running process calls with the steps it copied when it started, whatever its template says now.
  const processes = await findProcessesUsing(db, { serviceId, lacking: parameter.name })
  if (processes.length > 0) {
    throw conflict(`Parameter "${parameter.name}" cannot be required without a default: steps of ${nameProcesses(processes)} still to call ` +
      'the service do not pass it (copied when they started). Give it a default, or wait until those steps have ended.')
  }
}

async function checkUnused(db: DB, parameter: WebhookParameter, advice: string, effect: string): Promise<void> {
  const templates = await findTemplatesUsing(db, { serviceId: parameter.serviceId, parameterName: parameter.name })
  if (templates.length > 0) {
    throw conflict(`Parameter "${parameter.name}" is passed by steps of ${nameTemplates(templates)}; ${advice}.`)
  }
  const processes = await findProcessesUsing(db, { serviceId: parameter.serviceId, parameterName: parameter.name })
  if (processes.length > 0) {
    throw conflict(`Parameter "${parameter.name}" is passed by steps of ${nameProcesses(processes)} still to call the service ` +
      `(copied when they started); ${effect}. Wait until those steps have ended.`)
  }
}

/** Running processes named for a 409, e.g. `process instance 0190…`. */
function nameProcesses(processes: { id: string }[]): string {
  return `${processes.length === 1 ? 'process instance' : 'process instances'} ${processes.map((p) => p.id).join(', ')}`
}
