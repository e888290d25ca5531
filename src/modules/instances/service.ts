import type { Clock } from '../../adapters/clock.js'
import type { DB } from '../../db/connect.js'
import type { Wakeups, WorkTable } from '../../db/wakeups.js'
import type { InstanceRow, InstanceStepRow, JsonObject, TemplateStepRow } from '../../db/database.js'
import { conflict, notFound, ProblemError, unprocessable, type FieldError } from '../../errors.js'
import { newId } from '../../lib/ids.js'
import { toPage, type PageRequest, type PageResult } from '../../lib/pagination.js'
import * as activities from '../activities/service.js'
import { findServiceForTenant } from '../marketplace/activations/repository.js'
import { isAutomatic } from '../templates/steps/kinds.js'
import { emailSettingsOf } from '../templates/steps/email.js'
import { sendManualEmail } from './manual-email.js'
import type { Decision, WriteValues } from '../templates/steps/decision-schemas.js'
import { decisionBranch } from './decide.js'
import { followUpOf } from '../templates/steps/follow-up.js'
import type { Activity } from '../activities/schemas.js'
import * as repo from './repository.js'
import * as runtime from './runtime-repository.js'
import type { Advance, DeliverySummary, Instance, InstanceStep, InstanceSummary, ListInstancesQuery, StartInstance } from './schemas.js'
import { ProcessChanges, type Written } from './process-changes.js'
import type { KnownStart } from './write-changes.js'
import { isForeignKeyViolation } from '../records/repository.js'

type DeliveryRow = repo.LatestDelivery

const iso = (date: Date | null) => date?.toISOString() ?? null

function toDeliverySummary(row: DeliveryRow): DeliverySummary {
  return {
    id: row.id,
    status: row.status,
    round: row.round,
    attempts: row.attempt_count,
    nextAttemptAt: row.status === 'pending' ? row.next_attempt_at.toISOString() : null,
    lastStatusCode: row.last_status_code,
    lastError: row.last_error
  }
}

function toInstanceStep(row: repo.StepView, delivery: DeliveryRow | undefined): InstanceStep {
  return {
    id: row.id,
    position: row.position,
    kind: row.kind,
    name: row.name,
    state: row.state,
    start: row.start_mode === 'daysAfterPrevious' ? { mode: row.start_mode, days: row.start_days ?? 0 } : { mode: row.start_mode },
    deadlineDays: row.deadline_days,
    refersTo: { property: row.refers_to_property, address: row.refers_to_address },
    serviceId: row.service_id,
    target: row.target_url !== null && row.target_delivery !== null ? { url: row.target_url, delivery: row.target_delivery } : null,
    startAt: iso(row.start_at),
    startedAt: iso(row.started_at),
    endedAt: iso(row.ended_at),
    assigneeUserId: row.assignee_user_id,
    deadlineAt: iso(row.deadline_at),
    note: row.note,
    email: row.kind === 'email' ? emailSettingsOf(row.settings) : null,
    writeValues: row.kind === 'writeValues' ? row.settings as WriteValues : null,
    decision: row.kind === 'decision' ? { ...row.settings as Decision, chosen: row.decision } : null,
    delivery: delivery ? toDeliverySummary(delivery) : null,
    followUp: followUpOf(row)
  }
}

function instanceFields(row: repo.InstanceView): Omit<InstanceSummary, 'currentStep'> {
  return {
    id: row.id,
    templateId: row.template_id,
    templateName: row.template_name,
    status: row.status,
    responsibleUserId: row.responsible_user_id,
    controllerUserId: row.controller_user_id,
    propertyId: row.property_id,
    addressId: row.address_id,
    parentId: row.parent_instance_id,
    parentStepId: row.parent_step_id,
    version: row.version,
    startedAt: row.started_at.toISOString(),
    endedAt: iso(row.ended_at)
  }
}

function toSummary(row: repo.InstanceListRow): InstanceSummary {
  const current = row.status === 'running' && row.step_id !== null
    ? {
        id: row.step_id, position: row.step_position ?? 0, name: row.step_name ?? '', state: row.step_state ?? 'pending',
        assigneeUserId: row.step_assignee_user_id, startAt: iso(row.step_start_at), deadlineAt: iso(row.step_deadline_at)
      }
    : null
  return { ...instanceFields(row), currentStep: current }
}

/** The instance as the API shows it, from its row and its steps, each with its latest delivery. */
function toInstance(row: repo.InstanceView, steps: { step: repo.StepView; delivery: DeliveryRow | undefined }[]): Instance {
  const current = row.status === 'running' ? steps.find(({ step }) => step.position === row.current_position)?.step : undefined
  return {
    ...instanceFields(row),
    currentStep: current
      ? {
          id: current.id, position: current.position, name: current.name, state: current.state,
          assigneeUserId: current.assignee_user_id, startAt: iso(current.start_at), deadlineAt: iso(current.deadline_at)
        }
      : null,
    steps: steps.map(({ step, delivery }) => toInstanceStep(step, delivery))
  }
}

async function loadInstance(db: DB, tenantId: string, row: InstanceRow): Promise<Instance> {
  return toInstance(row, await repo.listStepsWithDeliveries(db, tenantId, row.id))
}

export async function getInstance(db: DB, tenantId: string, id: string): Promise<Instance> {
  const found = await repo.findInstanceView(db, tenantId, id)
  if (!found) throw notFound('Process instance', id)
  return toInstance(found.instance, found.steps)
}

/**
 * The answer to a change, built inside its own transaction from what it wrote (and its steps as they
 * now are): a 2xx then always describes what was committed, and a change that committed is never
 * answered with an error from a later read.
 */
async function answerOf(trx: DB, before: InstanceRow, written: Written): Promise<Instance> {
  return loadInstance(trx, before.tenant_id, written.instances.find((i) => i.id === before.id) ?? before)
}

export async function listInstances(db: DB, tenantId: string, page: PageRequest, filter: ListInstancesQuery): Promise<PageResult<InstanceSummary>> {
  return toPage(await repo.listInstances(db, tenantId, page, filter), page, toSummary)
}

export async function listInstanceActivities(db: DB, tenantId: string, id: string, page: PageRequest): Promise<PageResult<Activity>> {
  if (!(await repo.findInstance(db, tenantId, id))) throw notFound('Process instance', id)
  return activities.listActivitiesOf(db, tenantId, 'instance_id', id, page)
}

export interface Started {
  instance: Instance
  /** False when an earlier start with the same Idempotency-Key is returned. */
  created: boolean
}

/**
 * Starts a process from an active template: copies its steps and enters the first one. With an
 * idempotency key, a repeated start returns the process the first one started. No transaction: a
 * start reads (with READ COMMITTED, each statement saw a snapshot of its own inside one too, and the
 * reads lock nothing) and then writes everything in one statement, which commits alone and checks
 * again what the read found (a template deactivated or edited in between is read afresh): two round
 * trips, where BEGIN, the read, the insert, the changes and COMMIT took five (`npm run bench:api`).
 * A start without a key from a template this process has started from before skips the read, and
 * is one round trip unless its first step's assignee is a record's maintainer (startFromKnown).
 */
export async function startInstance(
  db: DB, clock: Clock, wakeups: Wakeups, tenantId: string, input: StartInstance, idempotencyKey?: string
): Promise<Started> {
  const fromKnown = idempotencyKey ? undefined : await startFromKnown(db, clock, tenantId, input)
  const { work, ...started } = fromKnown ?? await readAndStart(db, clock, tenantId, input, idempotencyKey)
  wakeups.announce(work)
  return started
}

/**
 * The start that reads its facts, then writes. A user, record or template deleted between the two
 * fails the write's foreign key: the start then reads again, and answers the 422 with a pointer that
 * a start after the deletion answers (or starts, if what it names is back).
 */
async function readAndStart(
  db: DB, clock: Clock, tenantId: string, input: StartInstance, idempotencyKey: string | undefined
): Promise<Started & { work: WorkTable[] }> {
  const start = () => startProcessIn(db, clock, tenantId, input, { idempotencyKey, onFacts: (facts) => knownTemplates.remember(tenantId, facts) })
  try {
    return await start()
  } catch (error) {
    if (!isForeignKeyViolation(error)) throw error
    knownTemplates.forget(tenantId, input.templateId)
    return start()
  }
}

/** What a start reads of its template, its steps and its tenant, whatever the user and records it names. */
type TemplateFacts = Pick<repo.StartFacts, 'template' | 'steps' | 'timeZone'>

/** A kept template's facts, with what a start from them checks again in its write (KnownStart). */
interface KnownFacts {
  facts: TemplateFacts
  known: KnownStart
}

/** What a start's write checks again of the facts it was planned from (KnownStart). */
function knownStartOf({ template, steps, timeZone }: TemplateFacts): KnownStart {
  return {
    templateVersion: template.version,
    stepVersions: Object.fromEntries(steps.map((step) => [step.id, step.version])),
    timeZone,
    serviceIds: [...new Set(steps.flatMap((step) => (step.kind === 'webhook' && step.service_id ? [step.service_id] : [])))]
  }
}

/**
 * The facts of the templates this process started from lately, by tenant and template, for starts
 * that skip reading them; the most recently used are kept, at most `max` of them and `maxChars`
 * characters of their JSON in all. Safe however old: the write checks them again (KnownStart), and a
 * start whose facts no longer hold forgets them and reads them afresh. Facts are remembered once a
 * start from them was written. A template whose steps hold a free target's secret is not kept:
 * re-encrypting the secrets (`npm run secrets:reencrypt`) changes no version, and a kept copy would go
 * on writing the secret as it was. Nor is one larger than an eighth of `maxChars`: its start copies
 * every step anyway, and the read it saves is little beside that.
 */
export class KnownTemplates {
  private readonly facts = new Map<string, KnownFacts & { chars: number }>()
  private chars = 0

  constructor(private readonly max: number, private readonly maxChars: number) {}

  get(tenantId: string, templateId: string): KnownFacts | undefined {
    const key = `${tenantId}:${templateId.toLowerCase()}`
    const entry = this.facts.get(key)
    if (entry) {
      this.facts.delete(key)
      this.facts.set(key, entry)
    }
    return entry
  }

  remember(tenantId: string, { template, steps, timeZone }: TemplateFacts): void {
    if (steps.some((step) => step.target_secret !== null)) return
    const key = `${tenantId}:${template.id}`
    this.drop(key)
    const chars = JSON.stringify(template).length + JSON.stringify(steps).length
    if (chars > this.maxChars / 8) return
    // A Map iterates in insertion order: the first template is the one used longest ago.
    while (this.facts.size >= this.max || this.chars + chars > this.maxChars) this.drop(this.facts.keys().next().value!)
    this.facts.set(key, { facts: { template, steps, timeZone }, known: knownStartOf({ template, steps, timeZone }), chars })
    this.chars += chars
  }

  forget(tenantId: string, templateId: string): void {
    this.drop(`${tenantId}:${templateId.toLowerCase()}`)
  }

  /** Templates kept, and the characters of their JSON. */
  get kept(): { templates: number; chars: number } {
    return { templates: this.facts.size, chars: this.chars }
  }

  private drop(key: string): void {
    const entry = this.facts.get(key)
    if (!entry) return
    this.facts.delete(key)
    this.chars -= entry.chars
  }
}

/**
 * Counted by templates alone, the thousand kept held whatever they weighed: starts from 30 templates
 * of 100 email steps of 20,000 characters kept 63 MB of the API's heap, 2.1 MB each, and a template
 * may have 1,000 such steps. A thousand templates of ten steps are some 5 MB of JSON.
 */
const KNOWN_TEMPLATES_CHARS = 32 * 1024 * 1024
const knownTemplates = new KnownTemplates(1000, KNOWN_TEMPLATES_CHARS)

/**
 * A start from known template facts, in one statement that inserts the process only while they still
 * hold (KnownStart) and the user and records it names exist (their foreign keys). Undefined when it
 * cannot go so: the facts are not known, the start would be refused (the full start then answers
 * with every reason), or the write found them changed or a name unknown; the caller then starts the
 * usual way.
 */
async function startFromKnown(db: DB, clock: Clock, tenantId: string, input: StartInstance): Promise<(Started & { work: WorkTable[] }) | undefined> {
  const entry = knownTemplates.get(tenantId, input.templateId)
  if (!entry || RECORDS.some((record) => missingRecord(entry.facts.steps, input, record))) return undefined
  const { facts, known } = entry
  try {
    const started = await writeStart(db, clock, tenantId, input, facts, { known })
    if (started) return started
  } catch (error) {
    if (!isForeignKeyViolation(error)) throw error
  }
  knownTemplates.forget(tenantId, input.templateId)
  return undefined
}

/** Who or what starts a process besides the API: a follow-up step of a parent process, or an autostart. */
export interface StartOptions {
  idempotencyKey?: string | undefined
  /** The process and follow-up step that start this one (process_instances.parent_instance_id, parent_step_id). */
  parent?: { instanceId: string; stepId: string } | undefined
  /** How many processes above the new one started it (src/modules/instances/chain.ts); 0 by default. */
  chainDepth?: number | undefined
  /** The first process of the chain a follow-up or a process's write starts it in (chain.ts); none by default. */
  chainRootId?: string | undefined
  /** What began the process, for its processStarted activity: "by autostart …" in the message, and data. */
  startedBy?: { says: string; data: JsonObject } | undefined
  /** Told what the start read, once a start from it was written. */
  onFacts?: ((facts: repo.StartFacts) => void) | undefined
}

/**
 * The core of a start: the API's start (with no transaction), a follow-up step (in the transaction
 * that holds the parent's process locked) and an autostart (in the one that holds the record being
 * written locked) all run it. Whatever it reads, it writes in one statement (ProcessChanges.flush). It
 * throws the API's 422 when the template cannot start a process with these records; callers without
 * a request turn that into a reason (startFailure).
 */
export async function startProcessIn(
  trx: DB, clock: Clock, tenantId: string, input: StartInstance, options: StartOptions = {}
): Promise<Started & { work: WorkTable[] }> {
  const { idempotencyKey } = options
  for (let tries = 1; ; tries += 1) {
    // A concurrent start with the same key committed first (the write inserted nothing): its process,
    // read with its steps in one statement, so that a change committed between two reads cannot pair
    // the process as it was with its steps as they are (a process gone meanwhile is started again).
    if (idempotencyKey) {
      const earlier = await repo.findInstanceByIdempotencyKey(trx, tenantId, idempotencyKey)
      const view = earlier && await repo.findInstanceView(trx, tenantId, checkSameStart(earlier, input).id)
      if (view) return { instance: toInstance(view.instance, view.steps), created: false, work: [] }
    }
    const facts = await checkStart(trx, tenantId, input)
    // The write checks again what the read found (a deactivation or a step edited in between is seen):
    // a start counts as after every change committed before its write.
    const started = await writeStart(trx, clock, tenantId, input, facts, { ...options, known: knownStartOf(facts) })
    if (started) {
      options.onFacts?.(facts)
      return started
    }
    if (tries === START_TRIES) {
      throw conflict(idempotencyKey
        ? 'A concurrent start with this Idempotency-Key did not finish, or the template kept changing; retry it.'
        : 'The template kept changing while the process was starting; retry it.')
    }
  }
}

/** How often a start reads its facts again when its write found them changed. */
const START_TRIES = 3

/**
 * Writes a start from the facts its checks passed on: the process, its steps, its first step entered
 * and the activities, in one statement (ProcessChanges.insertProcess). Undefined when it inserted
 * nothing: its idempotency key was taken, or the `known` facts no longer held.
 */
async function writeStart(
  trx: DB, clock: Clock, tenantId: string, input: StartInstance, { template, steps, timeZone }: TemplateFacts,
  options: StartOptions & { known?: KnownStart }
): Promise<(Started & { work: WorkTable[] }) | undefined> {
  const { idempotencyKey, parent, startedBy, known, chainDepth, chainRootId } = options
  const now = clock.now()
  const instanceId = newId(now.getTime())
  const row: InstanceRow = {
    tenant_id: tenantId,
    id: instanceId,
    template_id: template.id,
    template_name: template.name,
    status: 'running',
    responsible_user_id: input.responsibleUserId,
    controller_user_id: template.controller_user_id ?? input.responsibleUserId,
    notify_on_completion: template.notify_on_completion,
    property_id: input.propertyId ?? null,
    address_id: input.addressId ?? null,
    current_position: 1,
    idempotency_key: idempotencyKey ?? null,
    parent_instance_id: parent?.instanceId ?? null,
    parent_step_id: parent?.stepId ?? null,
    chain_depth: chainDepth ?? 0,
    chain_root_id: chainRootId ?? null,
    version: 1,
    started_at: now,
    ended_at: null,
    created_at: now,
    updated_at: now
  }
  const copies = steps.map((step) => copyStep(step, instanceId, now))
  const changes = new ProcessChanges(trx, now, new Map([[tenantId, timeZone]]))
  changes.insertProcess(row, copies, known)
  const data: JsonObject = { responsibleUserId: row.responsible_user_id, ...(parent ? { parentId: parent.instanceId, parentStepId: parent.stepId } : {}), ...startedBy?.data }
  changes.activity(row, null, 'processStarted', `Process "${row.template_name}" started${startedBy ? ` ${startedBy.says}` : ''}.`, data)
  changes.enterStep(row, copies[0]!, now)
  const written = await changes.flush()
  const inserted = written.instances.find((i) => i.id === instanceId)
  if (!inserted) return undefined
  // Built from what the statement wrote: the new rows, with the first step as it started.
  const writtenSteps = new Map(written.steps.map((step) => [step.id, step]))
  const deliveries = new Map(written.deliveries.map((d) => [d.step_id, d]))
  const view = copies.map((copy) => ({ step: writtenSteps.get(copy.id) ?? copy, delivery: deliveries.get(copy.id) }))
  return { instance: toInstance(inserted, view), created: true, work: written.work }
}

/**
 * Why a start without a request (a follow-up, an autostart) could not happen: the text of its 422, or
 * of its 409 (the template kept changing while it started); other errors are thrown.
 */
export function startFailure(error: unknown): string {
  if (error instanceof ProblemError && (error.status === 422 || error.status === 409)) return error.detail
  throw error
}

function checkSameStart(earlier: InstanceRow, input: StartInstance): InstanceRow {
  const same = earlier.template_id === input.templateId && earlier.responsible_user_id === input.responsibleUserId
    && earlier.property_id === (input.propertyId ?? null) && earlier.address_id === (input.addressId ?? null)
  if (!same) throw unprocessable(`The Idempotency-Key was used for a different start (process ${earlier.id}); use a new key.`)
  return earlier
}

async function checkStart(db: DB, tenantId: string, input: StartInstance): Promise<repo.StartFacts> {
  const facts = await repo.findStartFacts(db, tenantId, input)
  if (!facts) {
    // A start that met its tenant's deletion finds its template gone with the tenant, or the tenant marked as going: say what happened.
    if (!(await repo.tenantStays(db, tenantId))) throw conflict('The tenant was deleted, or is being deleted, while the process was starting; nothing was started.')
    throw unprocessable('The template does not exist.', [{ pointer: '/body/templateId', detail: 'no such process template' }])
  }
  const { template, steps } = facts
  if (!template.active) {
    throw unprocessable(`Template "${template.name}" is not active; activate it before starting processes.`,
      [{ pointer: '/body/templateId', detail: 'template is inactive' }])
  }
  if (steps.length === 0) throw unprocessable(`Template "${template.name}" has no steps.`, [{ pointer: '/body/templateId', detail: 'template has no steps' }])

  const errors: FieldError[] = []
  if (!facts.userExists) errors.push({ pointer: '/body/responsibleUserId', detail: 'no such user' })
  for (const record of RECORDS) {
    const exists = record.field === 'propertyId' ? facts.propertyExists : facts.addressExists
    if (input[record.field] !== undefined && !exists) errors.push({ pointer: `/body/${record.field}`, detail: `no such ${record.label}` })
    const missing = missingRecord(steps, input, record)
    if (missing) errors.push(missing)
  }
  for (const name of facts.unusableSteps) {
    errors.push({ pointer: '/body/templateId', detail: `step "${name}" calls a marketplace service that is inactive or not activated` })
  }
  if (errors.length > 0) throw unprocessable('The process cannot start: ' + errors.map((e) => e.detail).join('; ') + '.', errors)
  return facts
}

/** The records a start may name, and the flag of a step that refers to each. */
const RECORDS = [
  { field: 'propertyId', flag: 'refers_to_property', label: 'property' },
  { field: 'addressId', flag: 'refers_to_address', label: 'address' }
] as const

/** The error of a start that does not name a record the template's steps refer to. */
function missingRecord(steps: TemplateStepRow[], input: StartInstance, { field, flag, label }: (typeof RECORDS)[number]): FieldError | undefined {
  const needing = steps.filter((s) => s[flag])
  if (input[field] !== undefined || needing.length === 0) return undefined
  const names = needing.map((s) => `"${s.name}"`).join(', ')
  return { pointer: `/body/${field}`, detail: `required: ${needing.length === 1 ? `step ${names} refers` : `steps ${names} refer`} to the ${label}` }
}

/** A template step as its process's step, every column as the table's defaults would set it. */
function copyStep(step: TemplateStepRow, instanceId: string, now: Date): InstanceStepRow {
  return {
    tenant_id: step.tenant_id,
    id: newId(now.getTime()),
    instance_id: instanceId,
    position: step.position,
    kind: step.kind,
    name: step.name,
    start_mode: step.start_mode,
    start_days: step.start_days,
    responsibility: step.responsibility,
    responsible_user_id: step.responsible_user_id,
    deadline_days: step.deadline_days,
    refers_to_property: step.refers_to_property,
    refers_to_address: step.refers_to_address,
    service_id: step.service_id,
    target_url: step.target_url,
    target_delivery: step.target_delivery,
    target_secret: step.target_secret,
    parameters: step.parameters,
    settings: step.settings,
    automatic: isAutomatic(step.kind, step.settings),
    state: 'pending',
    assignee_user_id: null,
    start_at: null,
    started_at: null,
    ended_at: null,
    deadline_at: null,
    deadline_notified_at: null,
    note: null,
    decision: null,
    version: 1
  }
}

/**
 * A lock on the instance for a change from the API, taken by `lock` (NOWAIT): another change in
 * progress answers 409 at once, an instance that is not there (or not the tenant's) 404.
 */
async function lockedForChange<T>(id: string, lock: () => Promise<T | undefined>): Promise<T> {
  let locked: T | undefined
  try {
    locked = await lock()
  } catch (error) {
    if ((error as { code?: string }).code === '55P03') throw conflict(`Process instance ${id} is being changed by another request; retry it.`)
    throw error
  }
  if (!locked) throw notFound('Process instance', id)
  return locked
}

/** Locks the instance for a change from the API (lockedForChange). */
function lockForChange(db: DB, tenantId: string, id: string): Promise<InstanceRow> {
  return lockedForChange(id, () => runtime.lockInstance(db, tenantId, id, { noWait: true }))
}

/** Like lockForChange, with the tenant's time zone and the process's steps, in one round trip (repo.lockWithSteps). */
function lockWithSteps(db: DB, tenantId: string, id: string): Promise<{ instance: InstanceRow; timeZone: string; steps: repo.StepWithDelivery[] }> {
  return lockedForChange(id, () => repo.lockWithSteps(db, tenantId, id))
}

/** The changes of one request to this tenant's processes, at its time zone. */
async function changesOf(db: DB, tenantId: string, now: Date): Promise<ProcessChanges> {
  return new ProcessChanges(db, now, await runtime.findTimeZones(db, [tenantId]))
}

/**
 * What a person may do with the current step: a task is done or skipped; a step that waits, or that
 * the scheduler would carry out (a webhook's call not yet made, an automatic step), can be skipped; a
 * step that failed into a manual one is done by hand or skipped.
 */
function allowedOutcomes(step: InstanceStepRow): readonly Advance['outcome'][] {
  // A decision is decided (done with yes or no), never skipped: skipping would leave its branches unchosen.
  if (step.kind === 'decision') return ['waiting', 'due', 'failed'].includes(step.state) ? ['done'] : []
  if (step.state === 'waiting') return ['skipped']
  if (step.state === 'failed') return ['done', 'skipped']
  // A follow-up step that waits for its process to complete: a person may stop waiting (the process goes on).
  if (step.state === 'running' && step.kind === 'followUpProcess') return ['skipped']
  if (step.state !== 'due') return []
  if (step.kind === 'task') return ['done', 'skipped']
  if (step.kind === 'email' && !step.automatic) return ['done', 'skipped'] // done sends its mail
  return step.kind === 'webhook' || step.automatic ? ['skipped'] : []
}

/**
 * Ends the current step as done or skipped and starts the next one (docs/architecture.md, Advancing).
 * In three statements and two round trips: the lock (with the tenant's time zone, BEGIN going with
 * it) and the steps with their deliveries, sent together; then the write (COMMIT going with it). The
 * answer is built from what the write returned (as a start's is). Measured with
 * scripts/bench/api-ab.ts: CPU per advance x0.78 in the API, x0.79 in Postgres.
 */
export async function advanceInstance(
  db: DB, clock: Clock, wakeups: Wakeups, tenantId: string, id: string, input: Advance, by: string
): Promise<Instance> {
  let work: WorkTable[] = []
  const advanced = await db.transaction().execute(async (trx) => {
    const { instance, timeZone, steps: listed } = await lockWithSteps(trx, tenantId, id)
    if (instance.status !== 'running') throw conflict(`Process instance ${id} is ${instance.status}; there is no step to advance.`)
    let view = listed
    let step = view.find(({ step }) => step.position === instance.current_position)?.step
    if (!step) throw conflict(`Process instance ${instance.id} has no current step.`)
    if (input.stepId !== undefined && input.stepId !== step.id) {
      throw conflict(`Step ${input.stepId} is not the current step of process ${id}; the current one is "${step.name}" (${step.id}).`)
    }
    // Only a skip cancels (a due webhook step cannot be marked done): a refused advance takes no locks.
    const cancelling = step.kind === 'webhook' && step.state === 'due' && input.outcome === 'skipped'
    if (cancelling) {
      // A delivery no worker has claimed is cancelled; one claimed meanwhile shows as a running step below
      // (and cannot go back to the queue before the read: the cancel locks the step's open deliveries).
      await runtime.cancelPendingDeliveries(trx, tenantId, { stepId: step.id }, clock.now(), 'cancelled: the step was skipped before the call')
      step = await currentStep(trx, instance)
    }
    const allowed = allowedOutcomes(step)
    if (!allowed.includes(input.outcome)) {
      const why = step.state === 'running' && step.kind === 'followUpProcess' ? 'it waits for its follow-up process to end; it can only be skipped'
        : step.state === 'running' ? (step.kind === 'email' ? 'its e-mail is being sent' : 'its webhook call is in flight')
        : allowed.length > 0 ? `it can only be ${allowed.join(' or ')}` : `it is ${step.state}`
      throw conflict(`Step "${step.name}" (${step.kind}, ${step.state}) cannot be ${input.outcome === 'done' ? 'marked done' : 'skipped'}: ${why}.`)
    }
    const branch = decisionBranch(step, input)
    const mailed = await sendManualEmail(trx, clock.now(), instance, step, input)
    const changes = new ProcessChanges(trx, clock.now(), new Map([[tenantId, timeZone]]))
    changes.knowNextOf(step, view.map(({ step }) => step))
    changes.endStep(instance, step, input.outcome, input.note ?? null, by, branch)
    changes.bump(instance)
    // The write ends the transaction (its COMMIT goes with it), unless the steps are read again after it.
    const written = await changes.flush({ last: !cancelling })
    work = mailed ? [...written.work, 'outbox_mails'] : written.work
    // A cancelled delivery is not among the rows written: read the steps again.
    if (cancelling) return answerOf(trx, instance, written)
    const steps = new Map(written.steps.map((s) => [s.id, s]))
    const deliveries = new Map(written.deliveries.map((d) => [d.step_id, d]))
    view = view.map(({ step, delivery }) => ({ step: steps.get(step.id) ?? step, delivery: deliveries.get(step.id) ?? delivery }))
    return toInstance(written.instances.find((i) => i.id === instance.id) ?? instance, view)
  })
  wakeups.announce(work)
  return advanced
}

async function currentStep(db: DB, instance: InstanceRow): Promise<InstanceStepRow> {
  const step = instance.current_position === null ? undefined
    : await runtime.findStepAt(db, instance.tenant_id, instance.id, instance.current_position)
  if (!step) throw conflict(`Process instance ${instance.id} has no current step.`)
  return step
}

export async function cancelProcess(db: DB, clock: Clock, wakeups: Wakeups, tenantId: string, id: string, note: string | null): Promise<Instance> {
  let work: WorkTable[] = []
  const cancelled = await db.transaction().execute(async (trx) => {
    const instance = await lockForChange(trx, tenantId, id)
    if (instance.status !== 'running') throw conflict(`Process instance ${id} is already ${instance.status}.`)
    // Unclaimed deliveries are cancelled first, so no worker can claim one between the check and the cancel
    // (and none claimed goes back to the queue before the check: the cancel locks the open deliveries).
    await runtime.cancelPendingDeliveries(trx, tenantId, { instanceId: id }, clock.now(), 'cancelled: the process was cancelled before the call')
    const step = instance.current_position === null ? undefined : await runtime.findStepAt(trx, tenantId, id, instance.current_position)
    if (step?.state === 'running' && step.kind === 'email') {
      if (!(await runtime.withdrawStepMail(trx, tenantId, step.id, clock.now()))) {
        throw conflict(`Step "${step.name}" is sending its e-mail right now; cancel again once it has been sent.`)
      }
    } else if (step?.state === 'running' && step.kind === 'webhook') {
      throw conflict(`Step "${step.name}" is calling its webhook right now; cancel again once the call has ended.`)
    }
    const now = clock.now()
    await runtime.cancelOpenSteps(trx, tenantId, id, now)
    const changes = await changesOf(trx, tenantId, now)
    changes.cancel(instance, note)
    if (step) changes.mailIfOverdue(instance, step)
    changes.bump(instance)
    const written = await changes.flush()
    work = written.work
    return answerOf(trx, instance, written)
  })
  wakeups.announce(work)
  return cancelled
}

/** A failed webhook step goes back to the scheduler, with a fresh round of attempts. */
export async function retryStep(db: DB, clock: Clock, wakeups: Wakeups, tenantId: string, id: string, stepId: string): Promise<Instance> {
  let work: WorkTable[] = []
  const retried = await db.transaction().execute(async (trx) => {
    const instance = await lockForChange(trx, tenantId, id)
    const step = await runtime.findStep(trx, tenantId, stepId)
    if (!step || step.instance_id !== id) throw notFound('Step', stepId)
    if (instance.status !== 'running') throw conflict(`Process instance ${id} is ${instance.status}.`)
    if (step.kind !== 'webhook' || step.state !== 'failed') {
      throw conflict(`Only a failed webhook step can be retried; step "${step.name}" is a ${step.state} ${step.kind} step.`)
    }
    // The scheduler would not call a service this tenant no longer has active: say so now, as a replay does.
    const service = step.service_id === null ? undefined : await findServiceForTenant(trx, tenantId, step.service_id)
    if (service && (!service.active || !service.activated_at)) {
      throw conflict(`Service "${service.name}" is not active for this tenant; activate it before retrying step "${step.name}".`)
    }
    const delivery = await runtime.findLatestStepDelivery(trx, tenantId, stepId)
    const now = clock.now()
    const requeued = delivery && await repo.requeueDelivery(trx, tenantId, delivery.id, now)
    if (!requeued) throw conflict(`Step "${step.name}" has no failed delivery to retry.`)
    const changes = await changesOf(trx, tenantId, now)
    changes.setStepState(step, 'due')
    changes.bump(instance)
    changes.activity(instance, step, 'webhookRetried', `Webhook step "${step.name}" queued again by hand (round ${requeued.round}).`,
      { deliveryId: requeued.id, round: requeued.round })
    const written = await changes.flush()
    work = ['deliveries', ...written.work]
    return answerOf(trx, instance, written)
  })
  wakeups.announce(work)
  return retried
}
