import { sql, type CompiledQuery, type RawBuilder } from '../../db/kysely.js'
import type { DB } from '../../db/connect.js'
import type { AutostartRunsTable, JsonObject } from '../../db/database.js'
import type { PageRequest } from '../../lib/pagination.js'
import type { Insertable } from '../../db/kysely.js'

export type RecordKindName = 'property' | 'address'
const RECORD_TABLE = { property: 'properties', address: 'addresses' } as const

export interface AutostartTemplate {
  tenant_id: string
  id: string
  name: string
  autostart: JsonObject
}

/**
 * The active templates of the tenant that start on these events of this kind of record (a partial index
 * holds them), locked FOR KEY SHARE until the record write commits: a change to one (deactivating it,
 * removing or changing its autostart, deleting it) locks it FOR UPDATE first, so it waits for the
 * write, or the write waits for it and reads it as changed. Without the lock, a change that committed
 * between this read and the run's claim still had a process started from the settings it removed, and
 * a deletion failed the write on the claim's foreign key.
 */
export async function findAutostartTemplates(db: DB, tenantId: string, record: RecordKindName, events: string[]): Promise<AutostartTemplate[]> {
  return (await db.executeQuery(autostartTemplatesStatement(db, tenantId, record, events))).rows
}

/** The statement of findAutostartTemplates, for a record write to send together with its other reads (src/modules/records/watchers.ts). */
export function autostartTemplatesStatement(db: DB, tenantId: string, record: RecordKindName, events: string[]): CompiledQuery<AutostartTemplate> {
  return sql<AutostartTemplate>`
    select tenant_id, id, name, autostart from process_templates
    where tenant_id = ${tenantId} and active and autostart is not null
      and autostart->>'record' = ${record} and autostart->>'on' = any(${events}::text[])
    order by id
    for key share`.compile(db)
}

/**
 * A dateReached template at the version read, with its tenant's time zone and the last date it
 * checked whole (null before the chore's first pass after migration 0019).
 */
export type DateTemplate = AutostartTemplate & { version: number; time_zone: string; checked_through: string | null }

/**
 * Every tenant's active templates that start when a date is reached, with the tenant's time zone: the
 * local date is worked out per template, as the rest of Baton reads it (Intl), so that one tenant's
 * zone cannot fail the query for all. A tenant being deleted starts no process, and is not checked.
 */
export async function findDateTemplates(db: DB): Promise<DateTemplate[]> {
  const { rows } = await sql<DateTemplate>`
    select t.tenant_id, t.id, t.name, t.autostart, t.version, tn.time_zone, to_char(t.dates_checked_through, 'YYYY-MM-DD') as checked_through
    from process_templates t join tenants tn on tn.id = t.tenant_id and tn.deleting_since is null
    where t.active and t.autostart is not null and t.autostart->>'on' = 'dateReached'
    order by t.tenant_id, t.id`.execute(db)
  return rows
}

/** Where a date is looked for: the template, its kind of record and date field, the record date, and whether the year counts. */
export interface DateSearch {
  template: AutostartTemplate
  record: RecordKindName
  field: string
  target: string
  ignoreYear: boolean
}

/**
 * What a date search matches on, as SQL: one search's values (termsOf), or the columns of a list of
 * searches (searchesWithCandidates).
 */
interface DateTerms {
  tenantId: RawBuilder<unknown>
  templateId: RawBuilder<unknown>
  field: RawBuilder<unknown>
  target: RawBuilder<unknown>
}

function termsOf({ template, field, target }: DateSearch): DateTerms {
  return { tenantId: sql`${template.tenant_id}::uuid`, templateId: sql`${template.id}::uuid`, field: sql`${field}::text`, target: sql`${target}::text` }
}

/**
 * The records whose date field falls on the search's target (or, ignoring the year, on its day and
 * month; 29 February on 28 February of other years) and that have no run of this template for it yet.
 * A date's digits are ASCII's: `\d` follows the database's collation, and under an ICU one (`de`,
 * `tr`) took Arabic-Indic and full-width digits too, so "１９９０-01-02" was a birthday there and not
 * on a libc database.
 */
function dateCandidates(record: RecordKindName, ignoreYear: boolean, { tenantId, templateId, field, target }: DateTerms) {
  const value = sql`(r.fields->>${field})`
  const match = ignoreYear
    ? sql`jsonb_typeof(r.fields->${field}) = 'string' and ${value} ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}'
        and (substr(${value}, 6, 5) = substr(${target}, 6, 5)
          or (substr(${target}, 6, 5) = '02-28' and substr(${value}, 6, 5) = '02-29'
            and extract(day from (make_date(substr(${target}, 1, 4)::int, 3, 1) - 1)) = 28))`
    : sql`jsonb_typeof(r.fields->${field}) = 'string' and substr(${value}, 1, 10) = ${target}`
  return sql`from ${sql.table(RECORD_TABLE[record])} r
    where r.tenant_id = ${tenantId} and ${match}
      and not exists (select 1 from autostart_runs a where a.tenant_id = r.tenant_id and a.template_id = ${templateId}
        and a.record_kind = ${record} and a.record_id = r.id and a.occurrence = 'date:' || ${target})`
}

/**
 * The search's candidates (dateCandidates), locked against deletion; records another transaction
 * writes are skipped and found again on the next pass.
 */
export async function lockDateCandidates(db: DB, search: DateSearch, limit: number): Promise<{ id: string; maintainer_user_id: string | null }[]> {
  const { rows } = await sql<{ id: string; maintainer_user_id: string | null }>`
    select r.id, r.maintainer_user_id ${dateCandidates(search.record, search.ignoreYear, termsOf(search))}
    order by r.id
    limit ${limit}
    for key share of r skip locked`.execute(db)
  return rows
}

/** Whether the search has a candidate left: one beyond a pass's limit, or one a write held when it was passed by. */
export async function anyDateCandidateLeft(db: DB, search: DateSearch): Promise<boolean> {
  const { rows } = await sql<{ left: boolean }>`
    select exists (select 1 ${dateCandidates(search.record, search.ignoreYear, termsOf(search))}) as left`.execute(db)
  return rows[0]?.left === true
}

/**
 * Which of these searches, all of one kind of record and alike in ignoreYear, have a candidate
 * (anyDateCandidateLeft), in one statement: their places in the list. Each search looks among its own
 * tenant's records, through their key, and stops at the first candidate: the limit keeps Postgres from
 * pulling the search up into a join that read the whole record table (every tenant's) and hashed every
 * run, once a statement, 72 ms on 200,000 addresses and growing with them. The order makes the key the
 * cheaper way still when a few tenants hold most records (every tenant then looks big to the planner,
 * and without it the first candidate looked near enough to read the whole table for, in each search).
 */
export async function searchesWithCandidates(db: DB, record: RecordKindName, ignoreYear: boolean, searches: DateSearch[]): Promise<Set<number>> {
  const { rows } = await searchesWithCandidatesStatement(record, ignoreYear, searches).execute(db)
  return new Set(rows.map((row) => Number(row.place) - 1))
}

export function searchesWithCandidatesStatement(record: RecordKindName, ignoreYear: boolean, searches: DateSearch[]) {
  const column = <T>(of: (search: DateSearch) => T) => searches.map(of)
  return sql<{ place: string }>`
    select s.place from unnest(${column((s) => s.template.tenant_id)}::uuid[], ${column((s) => s.template.id)}::uuid[],
      ${column((s) => s.field)}::text[], ${column((s) => s.target)}::text[]) with ordinality as s(tenant_id, template_id, field, target, place)
    cross join lateral (
      select 1 ${dateCandidates(record, ignoreYear, { tenantId: sql`s.tenant_id`, templateId: sql`s.template_id`, field: sql`s.field`, target: sql`s.target` })}
      order by r.id limit 1) c`
}

/**
 * Whether the template is still at the version the pass read, locked against changes until the
 * transaction ends (a change in progress is waited for): a pass never claims runs with settings the
 * template no longer has.
 */
export async function lockDateTemplate(db: DB, template: DateTemplate): Promise<boolean> {
  const { rows } = await sql<{ version: number }>`select version from process_templates
    where tenant_id = ${template.tenant_id} and id = ${template.id} for key share`.execute(db)
  return rows[0]?.version === template.version
}

/** A template that has checked every date through `through`, as the pass that read it found. */
export interface DatesChecked {
  template: DateTemplate
  through: string
}

/**
 * Records for each template that it has checked every date through its date, if it is still at the
 * version the pass read and no other pass moved the date meanwhile (a change of the template sets it
 * anew; another worker's pass may have gone further), in one statement. The templates are locked in
 * the order of their key, so two workers marking the same ones wait for each other and do not deadlock.
 */
export async function markDatesChecked(db: DB, marks: DatesChecked[]): Promise<void> {
  if (marks.length === 0) return
  const column = <T>(of: (mark: DatesChecked) => T) => marks.map(of)
  await sql`
    with marks as (
      select * from unnest(${column((m) => m.template.tenant_id)}::uuid[], ${column((m) => m.template.id)}::uuid[],
        ${column((m) => m.template.version)}::int[], ${column((m) => m.template.checked_through)}::date[], ${column((m) => m.through)}::date[])
        as m(tenant_id, id, version, checked_through, through)
    ), moving as (
      select t.tenant_id, t.id, m.through from process_templates t
      join marks m on m.tenant_id = t.tenant_id and m.id = t.id
      where t.version = m.version and t.dates_checked_through is not distinct from m.checked_through
      order by t.tenant_id, t.id
      for no key update of t
    )
    update process_templates t set dates_checked_through = moving.through
    from moving where t.tenant_id = moving.tenant_id and t.id = moving.id`.execute(db)
}

/** Claims the run of this template for this record and occurrence; undefined when another write, worker or retry has it. */
export function claimRun(db: DB, row: Insertable<AutostartRunsTable>) {
  return db.insertInto('autostart_runs').values(row)
    .onConflict((oc) => oc.columns(['tenant_id', 'template_id', 'record_kind', 'record_id', 'occurrence']).doNothing())
    .returning('id').executeTakeFirst()
}

export async function settleRun(db: DB, tenantId: string, id: string, outcome: 'started' | 'skipped', reason: string | null, instanceId: string | null) {
  await db.updateTable('autostart_runs').set({ outcome, reason, instance_id: instanceId }).where('tenant_id', '=', tenantId).where('id', '=', id).execute()
}

/** Newest first. */
export function listRuns(db: DB, tenantId: string, templateId: string, page: PageRequest, outcome?: 'started' | 'skipped') {
  let query = db.selectFrom('autostart_runs').selectAll().where('tenant_id', '=', tenantId).where('template_id', '=', templateId)
    .orderBy('id', 'desc').limit(page.limit + 1)
  if (page.after) query = query.where('id', '<', page.after)
  if (outcome) query = query.where('outcome', '=', outcome)
  return query.execute()
}
