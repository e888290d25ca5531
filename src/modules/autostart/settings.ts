import type { DB } from '../../db/connect.js'
import type { JsonObject } from '../../db/database.js'
import type { FieldError } from '../../errors.js'
import { fieldNameProblem, isRefusedFieldName } from '../records/fields.js'
import { holdTenantUser } from '../users/repository.js'
import type { Autostart } from './schemas.js'

/** What a template's autostart setting is stored as (process_templates.autostart). */
export function autostartColumn(autostart: Autostart | null | undefined): string | null | undefined {
  if (autostart === undefined) return undefined
  return autostart === null ? null : JSON.stringify(autostart)
}

export function autostartOf(column: JsonObject | null): Autostart | null {
  return column as Autostart | null
}

/** What decides which records a dateReached autostart starts on, defaults filled in; null for any other autostart. */
export function dateWatch(autostart: Autostart | null | undefined): { record: string; field: string | undefined; daysOffset: number; ignoreYear: boolean } | null {
  if (autostart?.on !== 'dateReached') return null
  return { record: autostart.record, field: autostart.field, daysOffset: autostart.daysOffset ?? 0, ignoreYear: autostart.ignoreYear === true }
}

/** Everything wrong with an autostart setting beyond its schema. */
export async function autostartErrors(db: DB, tenantId: string, autostart: Autostart | null | undefined): Promise<FieldError[]> {
  if (!autostart) return []
  const errors: FieldError[] = []
  const at = (field: string, detail: string) => errors.push({ pointer: `/body/autostart/${field}`, detail })
  const { on } = autostart
  if (on === 'recordCreated' && autostart.field !== undefined) at('field', 'recordCreated watches no field: leave it out')
  if (on !== 'recordCreated' && autostart.field === undefined) at('field', `${on} needs the field it watches`)
  // A field no record can hold would never fire, as a writeValues step could never write it.
  const field = on === 'recordCreated' ? undefined : autostart.field
  if (field !== undefined && isRefusedFieldName(field)) at('field', `${field} cannot be a field: a record refuses it`)
  else if (field !== undefined) {
    const problem = fieldNameProblem(field)
    if (problem) at('field', problem)
  }
  if (on !== 'fieldChanged' && autostart.filter !== undefined) at('filter', 'only fieldChanged takes a filter')
  if (on !== 'dateReached' && autostart.daysOffset !== undefined) at('daysOffset', 'only dateReached takes daysOffset')
  if (on !== 'dateReached' && autostart.ignoreYear !== undefined) at('ignoreYear', 'only dateReached takes ignoreYear')
  if (typeof autostart.responsible === 'object' && !(await holdTenantUser(db, tenantId, autostart.responsible.user))) {
    at('responsible/user', `user ${autostart.responsible.user} does not exist`)
  }
  return errors
}
