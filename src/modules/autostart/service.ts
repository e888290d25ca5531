import type { DB } from '../../db/connect.js'
import type { RecordRow } from '../../db/database.js'
import { notFound } from '../../errors.js'
import { isDatabaseUnavailable, isStatementTimeout } from '../../db/errors.js'
import { addDays } from '../../lib/calendar.js'
import { newId } from '../../lib/ids.js'
import { toPage, type PageRequest, type PageResult } from '../../lib/pagination.js'
import { chainTooDeep, chainTooLong, type ChainWriter } from '../instances/chain.js'
import { startFailure, startProcessIn } from '../instances/service.js'
import * as repo from './repository.js'
import type { RecordKindName } from './repository.js'
import { DATE_CATCH_UP_DAYS, type Autostart, type AutostartRun, type ListAutostartRunsQuery } from './schemas.js'
import { autostartOf } from './settings.js'
import { isoDateIn } from '../templates/expressions/evaluate.js'

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
  /** Who wrote, when not a person: what its write starts is one further down its chain (chain.ts). */
  writer?: ChainWriter | undefined
}

/**
 * Starts the processes of the templates that watch this write, in the write's transaction: a template
 * on recordCreated for a new record, one on fieldChanged when its field changed to a value its filter
 * matches (occurrence: the record's new version). `read`: the templates findAutostartTemplates found,
 * read already. Returns how many runs it claimed.
 */
export async function autostartOnWrite(db: DB, now: Date, write: RecordWritten, read?: repo.AutostartTemplate[]): Promise<number> {
  const events = autostartEvents(write)
  if (events.length === 0) return 0
  const templates = read ?? await repo.findAutostartTemplates(db, write.tenantId, write.record, events)
  let claimed = 0
  for (const template of templates) {
    const autostart = autostartOf(template.autostart)!
    let occurrence = 'created'
    let says = `on the creation of the ${write.record}`
    if (autostart.on === 'fieldChanged') {
      const field = autostart.field ?? ''
      // Own fields only: a removed `constructor` or `toString` is null, not what every object inherits.
      const value = Object.hasOwn(write.row.fields, field) ? write.row.fields[field] : null
      if (!write.changedFields.includes(field) || !matches(autostart.filter, value)) continue
      occurrence = `changed:${write.row.version}`
      says = `as the ${write.record}'s ${field} became ${JSON.stringify(value ?? null)}`
    }
    if (await run(db, now, template, autostart, write.record, write.row, occurrence, says, write.writer)) claimed += 1
  }
  return claimed
}

/** The autostart events a record write is: none for an update that changed nothing. */
export function autostartEvents(write: Pick<RecordWritten, 'event' | 'changedFields'>): string[] {
  return write.event === 'create' ? ['recordCreated'] : write.changedFields.length > 0 ? ['fieldChanged'] : []
}

/**
 * A fieldChanged filter: the new value (null when the field was removed) equals eq, or one of in. The
 * filter's values are scalars: an object or a list equals none, and is not written out (a record's
 * 256 KiB written out for each of 100 values took 0.6 s a template); a scalar is written out once.
 */
function matches(filter: Autostart['filter'], value: unknown): boolean {
  if (!filter) return true
  if (typeof value === 'object' && value !== null) return false
  const text = JSON.stringify(value ?? null)
  const same = (wanted: unknown) => JSON.stringify(wanted) === text
  return 'eq' in filter ? same(filter.eq) : filter.in.some(same)
}

/**
 * The daily chore: for each active dateReached template, the records whose date field is daysOffset
 * days before the day checked, in the tenant's time zone (or its day and month, with ignoreYear),
 * start a process, once per date (occurrence `date:<the record's date that year>`). The days checked
 * are those after the last day the template checked whole (at most DATE_CATCH_UP_DAYS back) through
 * today: a day on which no worker ran is caught up, and each day is checked again on the next day's
 * passes until it has been over for DATE_SETTLES_MS, for records written after its last pass. About `limit` runs a pass in all
 * (at least one for each tenant with a date due); a template that fails is reported to `onError` and the others go on.
 * Returns how many runs it claimed.
 *
 * Most days of most templates find nothing: which do is asked first for many templates at once
 * (searchesThatMayHaveCandidates), and only those are checked in a transaction; the dates checked are
 * recorded for all the templates at once. One template at a time, a pass over 10,000 tenants' templates
 * took some 3 ms each, 30 to 40 s in all, during which the worker's other chores waited.
 */
export async function autostartOnDates(db: DB, now: Date, limit: number, onError: (error: unknown, templateId: string) => void): Promise<number> {
  const passes: DatePass[] = []
  // Today is worked out once a zone a pass: a formatter made per template took half the pass's time.
  const todays = new Map<string, { today: string; settled: string }>()
  const settledAt = new Date(now.getTime() - DATE_SETTLES_MS)
  const todayIn = (zone: string) => todays.get(zone) ?? todays.set(zone, { today: isoDateIn(now, zone), settled: isoDateIn(settledAt, zone) }).get(zone)!
  for (const template of await repo.findDateTemplates(db)) {
    try {
      passes.push(datePass(todayIn(template.time_zone), template))
    } catch (error) {
      onError(error, template.id)
    }
  }
  const failed = new Map<repo.AutostartTemplate, unknown>()
  const mayHaveCandidates = await searchesThatMayHaveCandidates(db, passes.flatMap((pass) => pass.searches), (error, search) => failed.set(search.template, error))
  for (const [template, error] of failed) onError(error, template.id)
  let claimed = 0
  const marks: repo.DatesChecked[] = []
  // The pass's `limit` is shared between the tenants whose templates may start something, each tenant's
  // share between its templates in turn: a tenant with many templates due on one day starts its share
  // on each pass, while the other chores and the other tenants' dates wait only for that.
  const due = new Set(passes.filter((pass) => pass.searches.some((search) => mayHaveCandidates.has(search))).map((pass) => pass.template.tenant_id))
  const share = Math.max(1, Math.floor(limit / Math.max(1, due.size)))
  const left = new Map<string, number>()
  for (const pass of passes) {
    // Its days' transactions would ask the same and fail alike: the next pass tries it again.
    if (failed.has(pass.template)) continue
    const tenantId = pass.template.tenant_id
    try {
      const checked = await checkDates(db, now, pass, left.get(tenantId) ?? share, mayHaveCandidates)
      left.set(tenantId, (left.get(tenantId) ?? share) - checked.claimed)
      claimed += checked.claimed
      if (checked.through !== undefined && checked.through !== pass.template.checked_through) marks.push({ template: pass.template, through: checked.through })
    } catch (error) {
      onError(error, pass.template.id)
    }
  }
  for (const part of inParts(marks, MARKS_A_STATEMENT)) await repo.markDatesChecked(db, part)
  return claimed
}

/**
 * Searches asked about, and templates marked, in one statement: a statement stays short however many
 * tenants there are (100 searches over 20 records each took 20 to 45 ms; 10,000 marks 0.8 s).
 */
const SEARCHES_A_STATEMENT = 100
const MARKS_A_STATEMENT = 1000

function inParts<T>(list: T[], size: number): T[][] {
  const parts: T[][] = []
  for (let at = 0; at < list.length; at += size) parts.push(list.slice(at, at + size))
  return parts
}

/**
 * The searches that may have a candidate: those found to have one, asked for a list of them in each
 * statement (of one kind of record and ignoreYear alike). A list whose statement fails for a reason
 * other than a lost connection (it overran the statement timeout, say) is asked again in halves, down
 * to the search that fails, which goes to `failed`: one template cannot stop the others. A lost
 * connection, or a database away, ends the pass.
 */
async function searchesThatMayHaveCandidates(
  db: DB, searches: repo.DateSearch[], failed: (error: unknown, search: repo.DateSearch) => void
): Promise<Set<repo.DateSearch>> {
  const found = new Set<repo.DateSearch>()
  const groups = new Map<string, repo.DateSearch[]>()
  for (const search of searches) {
    const key = `${search.record} ${search.ignoreYear}`
    const group = groups.get(key)
    if (group) group.push(search)
    else groups.set(key, [search])
  }
  const ask = async (list: repo.DateSearch[]): Promise<void> => {
    try {
      for (const place of await repo.searchesWithCandidates(db, list[0]!.record, list[0]!.ignoreYear, list)) found.add(list[place]!)
    } catch (error) {
      if (isDatabaseUnavailable(error) && !isStatementTimeout(error)) throw error
      if (list.length === 1) return failed(error, list[0]!)
      const half = Math.ceil(list.length / 2)
      await ask(list.slice(0, half))
      await ask(list.slice(half))
    }
  }
  for (const list of [...groups.values()].flatMap((group) => inParts(group, SEARCHES_A_STATEMENT))) await ask(list)
  return found
}

/**
 * How long after a day ends a pass still checks it rather than count it whole: a record dated that day
 * whose write was under way at midnight (begun before it, committed after the next day's first pass)
 * is not seen by that pass, and was never started.
 */
export const DATE_SETTLES_MS = 60 * 60_000

/** One template's pass: its today in the tenant's time zone, and the search of each day it checks. */
interface DatePass {
  template: repo.DateTemplate
  autostart: Autostart
  today: string
  /** The tenant's date DATE_SETTLES_MS ago: the days before it may count as whole. */
  settled: string
  /** The day before the first day checked. */
  from: string
  searches: (repo.DateSearch & { day: string })[]
}

function datePass({ today, settled }: { today: string; settled: string }, template: repo.DateTemplate): DatePass {
  const autostart = autostartOf(template.autostart)!
  const stored = template.checked_through
  const yesterday = addDays(today, -1)
  // A date from today on was written by a worker whose clock ran ahead, or before the tenant's time zone moved west.
  const checked = stored === null || stored >= today ? yesterday : stored
  // Days earlier than DATE_CATCH_UP_DAYS before today are given up.
  const earliest = addDays(today, -DATE_CATCH_UP_DAYS - 1)
  const from = checked < earliest ? earliest : checked
  const searches = daysAfter(from, today).map((day) => ({
    day, template, record: autostart.record, field: autostart.field ?? '', target: addDays(day, -(autostart.daysOffset ?? 0)), ignoreYear: autostart.ignoreYear === true
  }))
  return { template, autostart, today, settled, from, searches }
}

/**
 * One template's pass of autostartOnDates: each day that may have candidates in a transaction of its
 * own, the template locked at the version read. Returns the runs it claimed, and the last day checked
 * whole (undefined when the template changed since it was read: the next pass checks it anew).
 */
async function checkDates(
  db: DB, now: Date, { template, autostart, today, settled, from, searches }: DatePass, limit: number, mayHaveCandidates: Set<repo.DateSearch>
): Promise<{ claimed: number; through: string | undefined }> {
  let through = from
  let claimed = 0
  for (const search of searches) {
    // A day without candidates is whole even once the share is used up.
    if (claimed >= limit && mayHaveCandidates.has(search)) break
    const { day } = search
    // Nothing to start when the pass began: a day over for DATE_SETTLES_MS is whole; a later one (today) is left for the next pass.
    const outcome = !mayHaveCandidates.has(search) ? { count: 0, whole: day < settled } : await db.transaction().execute(async (trx) => {
      // A template changed since it was read is checked on the next pass, with its new settings.
      if (!(await repo.lockDateTemplate(trx, template))) return undefined
      const records = await repo.lockDateCandidates(trx, search, limit - claimed)
      let count = 0
      for (const record of records) {
        if (await run(trx, now, template, autostart, search.record, record, `date:${search.target}`, whyOnDate(search, autostart, day, today))) count += 1
      }
      // Today is never whole: records may still be written with today's date (and those begun yesterday commit after midnight).
      return { count, whole: day < settled && !(await repo.anyDateCandidateLeft(trx, search)) }
    })
    if (!outcome) return { claimed, through: undefined }
    claimed += outcome.count
    if (outcome.whole && through === addDays(day, -1)) through = day
  }
  return { claimed, through }
}

/** What a process started on a date says of why: "as the address's birthday 01-02 (every year) is 3 day(s) away". */
function whyOnDate(search: repo.DateSearch, autostart: Autostart, day: string, today: string): string {
  const when = search.ignoreYear ? `${search.target.slice(5)} (every year)` : search.target
  const offset = autostart.daysOffset ?? 0
  const away = offset < 0 ? `${-offset} day(s) away` : `${offset} day(s) past`
  if (day === today) return `as the ${search.record}'s ${search.field} ${when} is ${offset === 0 ? 'today' : away}`
  return `as the ${search.record}'s ${search.field} ${when} ${offset === 0 ? 'was reached' : `was ${away}`} on ${day} (checked late, on ${today})`
}

/** The dates after `through` up to today; today alone when `through` is today or later (a clock set back, a tenant's zone moved west). */
export function daysAfter(through: string, today: string): string[] {
  const days: string[] = []
  for (let day = addDays(through, 1); day <= today; day = addDays(day, 1)) days.push(day)
  return days.length > 0 ? days : [today]
}

/**
 * Claims the run, then starts the process or records why not: the record has no maintainer, or the
 * template cannot start with this record (inactive steps' services, a step that refers to the other
 * kind of record, an unknown user…), or the write was made by a writer too far down its chain, or
 * in a chain that started as many processes as it may (chain.ts). False when the run was claimed before.
 */
async function run(
  db: DB, now: Date, template: repo.AutostartTemplate, autostart: Autostart, record: RecordKindName,
  row: { id: string; maintainer_user_id: string | null }, occurrence: string, says: string, writer?: ChainWriter
): Promise<boolean> {
  const claim = await repo.claimRun(db, {
    tenant_id: template.tenant_id, id: newId(now.getTime()), template_id: template.id, record_kind: record, record_id: row.id,
    occurrence, outcome: 'skipped', reason: 'starting', created_at: now
  })
  if (!claim) return false
  const chainEnds = writer && (chainTooDeep(writer.chainDepth, 'that writer')
    ?? (writer.rootId && await chainTooLong(db, template.tenant_id, writer.rootId)))
  if (chainEnds) {
    await repo.settleRun(db, template.tenant_id, claim.id, 'skipped', `the ${record} was written by ${writer.says}: ${chainEnds}`, null)
    return true
  }
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
    }, {
      startedBy: { says: `by its autostart ${says}`, data: { autostartRunId: claim.id, occurrence, ...writer?.data } },
      chainDepth: writer ? writer.chainDepth + 1 : 0,
      chainRootId: writer?.rootId
    })
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
