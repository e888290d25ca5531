import type { DB } from '../../db/connect.js'
import type { RecordRow } from '../../db/database.js'
import { notFound } from '../../errors.js'
import { newId } from '../../lib/ids.js'
import { toPage, type PageRequest, type PageResult } from '../../lib/pagination.js'
import { startFailure, startProcessIn } from '../instances/service.js'
import * as repo from './repository.js'
import type { RecordKindName } from './repository.js'
import type { Autostart, AutostartRun, ListAutostartRunsQuery } from './schemas.js'
import { autostartOf } from './settings.js'

/*
 * Templates that start themselves (issue 12 item 6; docs/architecture.md, Autostart). A record write
 * runs the templates that watch it in its own transaction (the record row is locked by the write, so
 * two writes of one record fire one after another, each seeing the other's result); the scheduler's
 * daily chore (autostartOnDates) runs the date-based ones. Each occasion claims a row of
 * autostart_runs, unique per template, record and occurrence, before it starts anything: a second
 * write, worker or retry for the same occasion finds it taken and starts nothing.
 */

/** A record write: its kind, the row as written, and which fields changed. */
export interface RecordWritten {
  tenantId: string
  record: RecordKindName
  row: RecordRow
  event: 'create' | 'update'
  changedFields: string[]
}

/**
 * Starts the processes of the templates that watch this write, in the write's transaction: a template
 * on recordCreated for a new record, one on fieldChanged when its field changed to a value its filter
 * matches (occurrence: the record's new version). Returns how many runs it claimed.
 */
export async function autostartOnWrite(db: DB, now: Date, write: RecordWritten): Promise<number> {
  const events = write.event === 'create' ? ['recordCreated'] : write.changedFields.length > 0 ? ['fieldChanged'] : []
  if (events.length === 0) return 0
  const templates = await repo.findAutostartTemplates(db, write.tenantId, write.record, events)
  let claimed = 0
  for (const template of templates) {
    const autostart = autostartOf(template.autostart)!
    let occurrence = 'created'
    let says = `on the creation of the ${write.record}`
    if (autostart.on === 'fieldChanged') {
      const field = autostart.field ?? ''
      const value = write.row.fields[field]
      if (!write.changedFields.includes(field) || !matches(autostart.filter, value)) continue
      occurrence = `changed:${write.row.version}`
      says = `as the ${write.record}'s ${field} became ${JSON.stringify(value ?? null)}`
    }
    if (await run(db, now, template, autostart, write.record, write.row, occurrence, says)) claimed += 1
  }
  return claimed
}

/** A fieldChanged filter: the new value (null when the field was removed) equals eq, or one of in. */
export function matches(filter: Autostart['filter'], value: unknown): boolean {
  if (!filter) return true
  const same = (wanted: unknown) => JSON.stringify(wanted) === JSON.stringify(value ?? null)
  return 'eq' in filter ? same(filter.eq) : filter.in.some(same)
}

/**
 * The daily chore: for each active dateReached template, the records whose date field is daysOffset
 * days before today in the tenant's time zone (or its day and month, with ignoreYear) start a process,
 * once per date (occurrence `date:<the record's date this year>`). Each template in a transaction of
 * its own; returns how many runs it claimed.
 */
export async function autostartOnDates(db: DB, now: Date, limit: number): Promise<number> {
  let claimed = 0
  for (const template of await repo.findDateTemplates(db, now)) {
    const autostart = autostartOf(template.autostart)!
    const target = addDays(template.today, -(autostart.daysOffset ?? 0))
    claimed += await db.transaction().execute(async (trx) => {
      const records = await repo.lockDateCandidates(trx, template, autostart.record, autostart.field ?? '', target, autostart.ignoreYear === true, limit)
      let count = 0
      const when = autostart.ignoreYear ? `${target.slice(5)} (every year)` : target
      for (const record of records) {
        const says = `as the ${autostart.record}'s ${autostart.field} ${when} is ${describeOffset(autostart.daysOffset ?? 0)}`
        if (await run(trx, now, template, autostart, autostart.record, record, `date:${target}`, says)) count += 1
      }
      return count
    })
  }
  return claimed
}

function describeOffset(days: number): string {
  if (days === 0) return 'today'
  return days < 0 ? `${-days} day(s) away` : `${days} day(s) past`
}

/** The calendar date `days` after a YYYY-MM-DD date. */
export function addDays(date: string, days: number): string {
  const at = new Date(`${date}T00:00:00Z`)
  at.setUTCDate(at.getUTCDate() + days)
  return at.toISOString().slice(0, 10)
}

/**
 * Claims the run, then starts the process or records why not: the record has no maintainer, or the
 * template cannot start with this record (inactive steps' services, a step that refers to the other
 * kind of record, an unknown user…). False when the run was claimed before.
 */
async function run(
  db: DB, now: Date, template: repo.AutostartTemplate, autostart: Autostart, record: RecordKindName,
  row: { id: string; maintainer_user_id: string | null }, occurrence: string, says: string
): Promise<boolean> {
  const claim = await repo.claimRun(db, {
    tenant_id: template.tenant_id, id: newId(now.getTime()), template_id: template.id, record_kind: record, record_id: row.id,
    occurrence, outcome: 'skipped', reason: 'starting', created_at: now
  })
  if (!claim) return false
  const responsible = autostart.responsible === 'maintainer' ? row.maintainer_user_id : autostart.responsible.user
  if (!responsible) {
    await repo.settleRun(db, template.tenant_id, claim.id, 'skipped', `the ${record} has no maintainer to be responsible`, null)
    return true
  }
  try {
    const { instance } = await startProcessIn(db, { now: () => now }, template.tenant_id, {
      templateId: template.id,
      responsibleUserId: responsible,
      ...(record === 'property' ? { propertyId: row.id } : { addressId: row.id })
    }, { startedBy: { says: `by its autostart ${says}`, data: { autostartRunId: claim.id, occurrence } } })
    await repo.settleRun(db, template.tenant_id, claim.id, 'started', null, instance.id)
  } catch (error) {
    await repo.settleRun(db, template.tenant_id, claim.id, 'skipped', startFailure(error), null)
  }
  return true
}

function toRun(row: Awaited<ReturnType<typeof repo.listRuns>>[number]): AutostartRun {
  return {
    id: row.id,
    templateId: row.template_id,
    record: row.record_kind,
    recordId: row.record_id,
    occurrence: row.occurrence,
    outcome: row.outcome,
    reason: row.reason,
    instanceId: row.instance_id,
    createdAt: row.created_at.toISOString()
  }
}

export async function listAutostartRuns(db: DB, tenantId: string, templateId: string, page: PageRequest, query: Pick<ListAutostartRunsQuery, 'outcome'>): Promise<PageResult<AutostartRun>> {
  const template = await db.selectFrom('process_templates').select('id').where('tenant_id', '=', tenantId).where('id', '=', templateId).executeTakeFirst()
  if (!template) throw notFound('Process template', templateId)
  return toPage(await repo.listRuns(db, tenantId, templateId, page, query.outcome), page, toRun)
}
