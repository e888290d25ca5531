import type { Insertable } from '../../db/kysely.js'
import { byKeysText } from '../../db/by-keys.js'
import { identifier, Statement } from '../../db/statement.js'
import { THEN_COMMIT } from '../../db/postgres.js'
import type { DB } from '../../db/connect.js'
import type { DeliveriesTable, DeliveryRow, InstanceRow, InstanceStepRow, JsonObject, StepState } from '../../db/database.js'
import type { NewActivityRow } from '../activities/repository.js'
import { rowsTable, rowsText, type Column } from '../../db/json-rows.js'

/** A step that starts now: its assignee and deadline are fixed. */
interface StepStartChange {
  tenant_id: string
  id: string
  start_at: Date
  assignee_user_id: string
  deadline_at: Date | null
}

/** A step's new state; the other fields change only when given. */
export interface StepChange {
  tenant_id: string
  id: string
  state: StepState
  ended_at?: Date
  start_at?: Date
  note?: string | null
  /** Whether `note` replaces the step's note (a null note clears it). */
  set_note?: boolean
}

/** How one process changes: only the fields given change. */
export interface InstanceChange {
  tenant_id: string
  id: string
  current_position?: number
  status?: 'completed' | 'cancelled'
  ended_at?: Date
  /** One change to the process moves its version (and so its ETag) on by one. */
  bump: boolean
}

/** What one transaction changes in running processes, planned in full before it is written. */
export interface PlannedChanges {
  /** Step changes that hold whatever the step's state (the caller holds its process's lock). */
  steps: StepChange[]
  /** Steps that start, each only while it is still in `fromStates`. */
  starts: StepStartChange[]
  fromStates: StepState[]
  instances: InstanceChange[]
  /** `ifStarted`: written only when that step started (its "started" entry). */
  activities: (NewActivityRow & { ifStarted?: string })[]
  /** Each written only when its step started. */
  deliveries: PlannedDelivery[]
  /** A process that starts: inserted by the same statement, with the changes planned for it already made. */
  inserts?: NewProcess | undefined
}

/** A new process's rows as they are inserted: every column given, as the table's defaults would set it. */
export interface NewProcess {
  instance: InstanceRow
  steps: InstanceStepRow[]
  /** Facts read before, that must still hold for the process to be inserted (a start from known facts). */
  known?: KnownStart | undefined
}

/**
 * What a start from facts it read earlier checks again in its statement: its template still active
 * and at this version (any change to it or to one of its steps moves it on), each of its steps at its
 * version (any change to a step moves that on too), the tenant's time zone still this one, and each
 * service its webhook steps call still active and activated by the tenant. The user, property and
 * address it names are checked by their foreign keys.
 */
export interface KnownStart {
  templateVersion: number
  /** Each step's version, by id. */
  stepVersions: Record<string, number>
  timeZone: string
  serviceIds: string[]
}

type PlannedDelivery = Omit<Insertable<DeliveriesTable>, 'parameters'> & { parameters: JsonObject }

export interface WrittenRows {
  steps: InstanceStepRow[]
  deliveries: DeliveryRow[]
  instances: InstanceRow[]
}

/** The timestamp columns of the rows that come back as JSON. */
const DATES: Record<'steps' | 'deliveries' | 'instances', string[]> = {
  steps: ['start_at', 'started_at', 'ended_at', 'deadline_at', 'deadline_notified_at', 'created_at', 'updated_at'],
  deliveries: ['next_attempt_at', 'lease_expires_at', 'created_at', 'finished_at'],
  instances: ['started_at', 'ended_at', 'created_at', 'updated_at']
}

/** A row that came back as JSON, with its timestamps as Dates again. */
function revive<T>(row: Record<string, unknown>, dates: string[]): T {
  for (const column of dates) if (typeof row[column] === 'string') row[column] = new Date(row[column])
  return row as T
}

/**
 * The changes planned for the rows of a new process, made to those rows before they are inserted (an
 * update cannot reach a row that its own statement inserts); the rest of the plan is left for the
 * rows that exist. Each change is made as its update would make it. `started`: the new steps that
 * start, whose "started" activities and deliveries are written.
 */
function foldIntoInserts(plan: PlannedChanges, inserts: NewProcess, now: Date): { rest: PlannedChanges; inserts: NewProcess; started: string[] } {
  const instance = { ...inserts.instance }
  const steps = inserts.steps.map((step) => ({ ...step }))
  const byId = new Map(steps.map((step) => [step.id, step]))
  const rest: PlannedChanges = { ...plan, steps: [], starts: [], instances: [], inserts: undefined }
  const started: string[] = []
  for (const change of plan.steps) {
    const row = byId.get(change.id)
    if (!row) {
      rest.steps.push(change)
      continue
    }
    Object.assign(row, {
      state: change.state, ended_at: change.ended_at ?? row.ended_at, start_at: change.start_at ?? row.start_at,
      note: change.set_note ? change.note ?? null : row.note, version: row.version + 1
    })
  }
  for (const start of plan.starts) {
    const row = byId.get(start.id)
    if (!row) rest.starts.push(start)
    else if (plan.fromStates.includes(row.state)) {
      Object.assign(row, {
        state: 'due', start_at: start.start_at, started_at: now, assignee_user_id: start.assignee_user_id,
        deadline_at: start.deadline_at, version: row.version + 1
      })
      started.push(row.id)
    }
  }
  for (const change of plan.instances) {
    if (change.id !== instance.id) {
      rest.instances.push(change)
      continue
    }
    Object.assign(instance, {
      current_position: change.current_position ?? instance.current_position, status: change.status ?? instance.status,
      ended_at: change.ended_at ?? instance.ended_at, version: instance.version + (change.bump ? 1 : 0), updated_at: now
    })
  }
  return { rest, inserts: { ...inserts, instance, steps }, started }
}

/**
 * The statement's first CTEs when it starts a process: the instance, unless its idempotency key is
 * taken (a concurrent start with the key committed first), then its steps. `gate` holds every other
 * part of the statement to the instance's insert, so a start that loses that race writes nothing.
 */
function insertsOf(statement: Statement, inserts: NewProcess): string {
  const columns = (names: string[], prefix?: string) => names.map((name) => (prefix ? `${prefix}.${identifier(name)}` : identifier(name))).join(', ')
  const instanceColumns = Object.keys(inserts.instance)
  const stepColumns = Object.keys(inserts.steps[0] ?? {})
  const instance = statement.value(JSON.stringify(inserts.instance))
  const facts = inserts.known
  // The users the steps name ({"user":…}), held (FOR KEY SHARE) as a foreign key would hold them: a
  // deletion waits for the start and then sees its process, or was first, and the start inserts
  // nothing (its facts were read before the step stopped naming the user) and reads them again.
  const named = [...new Set(inserts.steps.flatMap((step) => (step.responsible_user_id ? [step.responsible_user_id] : [])))]
  const namedHeld = named.length === 0 ? '' : `
        ${facts ? 'and' : 'where'} (select count(*) from (select from users u where u.tenant_id = v.tenant_id
          and u.id in (select jsonb_array_elements_text(${statement.value(JSON.stringify(named))}::jsonb)::uuid) for key share of u) held) = ${statement.value(named.length)}`
  const stillHold = facts ? `
        where exists (select from process_templates t join tenants tn on tn.id = t.tenant_id and tn.deleting_since is null
          where t.tenant_id = v.tenant_id and t.id = v.template_id and t.active
            and t.version = ${statement.value(facts.templateVersion)} and tn.time_zone = ${statement.value(facts.timeZone)})
          and not exists (select from template_steps s where s.tenant_id = v.tenant_id and s.template_id = v.template_id
            and s.version is distinct from (${statement.value(JSON.stringify(facts.stepVersions))}::jsonb ->> s.id::text)::integer)
          and not exists (select from jsonb_array_elements_text(${statement.value(JSON.stringify(facts.serviceIds))}::jsonb) called(id)
            where not exists (select from marketplace_services m join service_activations a on a.service_id = m.id and a.tenant_id = v.tenant_id
              where m.id = called.id::uuid and m.active))` : ''
  const steps = stepColumns.length === 0 ? 'select null::uuid as id where false' : `
    insert into instance_steps (${columns(stepColumns)})
    select ${columns(stepColumns, 'v')} from jsonb_populate_recordset(null::instance_steps, ${statement.value(JSON.stringify(inserts.steps))}::jsonb) v
    where exists (select from inserted)
    returning *`
  return `
      inserted as (
        insert into process_instances (${columns(instanceColumns)})
        select ${columns(instanceColumns, 'v')} from jsonb_populate_record(null::process_instances, ${instance}::jsonb) v${stillHold}${namedHeld}
        on conflict (tenant_id, idempotency_key) where idempotency_key is not null do nothing
        returning *
      ), copies as (${steps})`
}

/** A part of the statement: a data-modifying CTE, and what it answers with (none for the activities). */
interface Part {
  cte: string
  answer?: string
}

/** The columns of each part's rows, as the statement reads them (src/db/json-rows.ts). */
const STEP_CHANGES: Column<StepChange>[] = [
  ['tenant_id', 'uuid'], ['id', 'uuid'], ['state', 'text'], ['ended_at', 'timestamptz'], ['start_at', 'timestamptz'], ['note', 'text'], ['set_note', 'boolean']
]
const STEP_STARTS: Column<StepStartChange>[] = [['tenant_id', 'uuid'], ['id', 'uuid'], ['start_at', 'timestamptz'], ['assignee_user_id', 'uuid'], ['deadline_at', 'timestamptz']]
const INSTANCE_CHANGES: Column<InstanceChange>[] = [
  ['tenant_id', 'uuid'], ['id', 'uuid'], ['current_position', 'integer'], ['status', 'text'], ['ended_at', 'timestamptz'], ['bump', 'boolean']
]
const ACTIVITIES: Column<PlannedChanges['activities'][number]>[] = [
  ['tenant_id', 'uuid'], ['id', 'uuid'], ['kind', 'text'], ['message', 'text'], ['property_id', 'uuid'], ['address_id', 'uuid'],
  ['instance_id', 'uuid'], ['step_id', 'uuid'], ['service_id', 'uuid'], ['data', 'jsonb'], ['created_at', 'timestamptz'], ['ifStarted', 'uuid']
]
const DELIVERIES: Column<PlannedDelivery>[] = [
  ['tenant_id', 'uuid'], ['id', 'uuid'], ['service_id', 'uuid'], ['source', 'text'], ['instance_id', 'uuid'], ['step_id', 'uuid'],
  ['property_id', 'uuid'], ['address_id', 'uuid'], ['parameters', 'jsonb'], ['next_attempt_at', 'timestamptz'], ['target_host', 'text']
]

/**
 * Writes all of it in one statement: a new process and its steps (a start), step changes, step starts,
 * process changes, activities and the started steps' deliveries, each a data-modifying CTE over a JSON
 * array. Measured with `npm run bench:scheduler`: an outcome batch went from eleven statements to
 * five. A part with nothing to write is left out of the statement, which Postgres would otherwise
 * set up on every run (a start uses four of the seven). Returns the rows it changed or inserted; with
 * `answer` false, none (a caller that has no use for them spares both sides turning every row into
 * JSON and back). With `last`, the statement carries its transaction's COMMIT (THEN_COMMIT). Its text
 * is written as a string (src/db/statement.ts): a start or an advance runs it every time.
 */
export async function writeChanges(
  db: DB, planned: PlannedChanges, now: Date, { answer = true, last = false }: { answer?: boolean; last?: boolean } = {}
): Promise<WrittenRows> {
  const statement = new Statement()
  const table = <Row extends object>(rows: readonly Row[], columns: readonly Column<Row>[], alias: string) =>
    rowsTable(statement.value(rowsText(rows, columns)), columns, alias)
  const folded = planned.inserts ? foldIntoInserts(planned, planned.inserts, now) : undefined
  const plan = folded?.rest ?? planned
  const gate = folded ? 'and exists (select from inserted)' : ''
  const parts: Part[] = []
  if (folded) {
    parts.push({ cte: insertsOf(statement, folded.inserts), answer: `select 'inserted' as kind, to_jsonb(c) as row from copies c union all select 'instance', to_jsonb(i) from inserted i` })
  }
  if (plan.steps.length > 0) {
    parts.push({
      cte: `changed as (
        update instance_steps s
        set state = v.state, ended_at = coalesce(v.ended_at, s.ended_at), start_at = coalesce(v.start_at, s.start_at),
            note = case when v.set_note then v.note else s.note end, version = s.version + 1
        from ${table(plan.steps, STEP_CHANGES, 'v')}
        where ${byKeysText(statement, 's', plan.steps)} and s.tenant_id = v.tenant_id and s.id = v.id ${gate}
        returning s.*
      )`,
      answer: `select 'changed' as kind, to_jsonb(c) as row from changed c`
    })
  }
  if (plan.starts.length > 0) {
    parts.push({
      cte: `started as (
        update instance_steps s
        set state = 'due', start_at = v.start_at, started_at = ${statement.value(now)}, assignee_user_id = v.assignee_user_id,
            deadline_at = v.deadline_at, version = s.version + 1
        from ${table(plan.starts, STEP_STARTS, 'v')}
        where ${byKeysText(statement, 's', plan.starts)} and s.tenant_id = v.tenant_id and s.id = v.id and s.state = any(${statement.value(plan.fromStates)}::text[]) ${gate}
        returning s.*
      )`,
      answer: `select 'started' as kind, to_jsonb(s) as row from started s`
    })
  }
  if (plan.instances.length > 0) {
    parts.push({
      cte: `instances as (
        update process_instances p
        set current_position = coalesce(v.current_position, p.current_position), status = coalesce(v.status, p.status),
            ended_at = coalesce(v.ended_at, p.ended_at), version = p.version + case when v.bump then 1 else 0 end, updated_at = ${statement.value(now)}
        from ${table(plan.instances, INSTANCE_CHANGES, 'v')}
        where ${byKeysText(statement, 'p', plan.instances)} and p.tenant_id = v.tenant_id and p.id = v.id ${gate}
        returning p.*
      )`,
      answer: `select 'instance' as kind, to_jsonb(i) as row from instances i`
    })
  }
  // The steps that started in this statement: the updated ones, and the new ones that start as inserted.
  const startedIds = [
    ...(plan.starts.length > 0 ? ['select id from started'] : []),
    ...(folded && folded.started.length > 0 ? [`select id from copies where id = any(${statement.value(folded.started)}::uuid[])`] : [])
  ]
  const startedSet = startedIds.length > 0 ? startedIds.join(' union all ') : 'select null::uuid as id where false'
  if (plan.activities.length > 0) {
    parts.push({
      cte: `activities as (
        insert into activities (tenant_id, id, kind, message, property_id, address_id, instance_id, step_id, service_id, data, created_at)
        select a.tenant_id, a.id, a.kind, a.message, a.property_id, a.address_id, a.instance_id, a.step_id, a.service_id, coalesce(a.data, '{}'), a.created_at
        from ${table(plan.activities, ACTIVITIES, 'a')}
        where (a."ifStarted" is null or a."ifStarted" in (${startedSet})) ${gate}
      )`
    })
  }
  if (plan.deliveries.length > 0 && startedIds.length > 0) {
    // The defaults of the service's parameters the step does not pass, as they are now: one added since the step was saved too.
    parts.push({
      cte: `deliveries as (
        insert into deliveries (tenant_id, id, service_id, source, instance_id, step_id, property_id, address_id, parameters, next_attempt_at, target_host)
        select d.tenant_id, d.id, d.service_id, d.source, d.instance_id, d.step_id, d.property_id, d.address_id,
          coalesce((select jsonb_object_agg(p.name, p.default_value) from service_parameters p
                    where p.service_id = d.service_id and p.default_value is not null), '{}') || d.parameters,
          d.next_attempt_at, d.target_host
        from ${table(plan.deliveries, DELIVERIES, 'd')}
        where d.step_id in (${startedSet}) ${gate}
        returning *
      )`,
      answer: `select 'delivery' as kind, to_jsonb(d) as row from deliveries d`
    })
  }
  if (parts.length === 0) return { steps: [], deliveries: [], instances: [] }
  const answers = parts.flatMap((part) => (part.answer ? [part.answer] : []))
  const { rows } = await statement.run<{ kind: 'changed' | 'started' | 'inserted' | 'instance' | 'delivery'; row: Record<string, unknown> }>(db, `
    with ${parts.map((part) => part.cte).join(', ')}
    ${answer && answers.length > 0 ? answers.join(' union all ') : 'select null as kind, null::jsonb as row where false'}
    ${last ? THEN_COMMIT : ''}
  `)
  const of = <T>(kinds: string[], dates: string[]) => rows.filter((r) => kinds.includes(r.kind)).map((r) => revive<T>(r.row, dates))
  return {
    steps: of<InstanceStepRow>(['changed', 'started', 'inserted'], DATES.steps),
    deliveries: of<DeliveryRow>(['delivery'], DATES.deliveries),
    instances: of<InstanceRow>(['instance'], DATES.instances)
  }
}
