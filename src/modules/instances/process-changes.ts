import type { DB } from '../../db/connect.js'
import type { WorkTable } from '../../db/wakeups.js'
import type { InstanceRow, InstanceStepRow, JsonObject, StepState } from '../../db/database.js'
import type { NewActivityRow } from '../activities/repository.js'
import { addCalendarDays } from '../../lib/calendar.js'
import { mailControllers, type MailCause } from './notify.js'
import { writeJumps } from './branches.js'
import * as repo from './runtime-repository.js'
import { activityRow, planStarts, type StepStart } from './transitions.js'
import { writeChanges, type InstanceChange, type KnownStart, type NewProcess, type PlannedChanges, type StepChange, type WrittenRows } from './write-changes.js'

export type EndOutcome = 'done' | 'skipped'

/** The states a deadline is reported in (the sweep's, src/scheduler/step-chores-repository.ts). */
const OPEN_FOR_DEADLINE = new Set<StepState>(['due', 'running', 'failed'])

/**
 * The rows a flush wrote, and the tables where they are work for a scheduler (what the triggers of
 * migration 0002 would announce): the caller announces them once its transaction has committed.
 */
export type Written = WrittenRows & { work: WorkTable[] }

function workOf(written: WrittenRows, mailed: boolean): WorkTable[] {
  const work: WorkTable[] = []
  if (written.deliveries.some((d) => d.status === 'pending')) work.push('deliveries')
  if (written.steps.some((s) => s.state === 'waiting' || s.state === 'due')) work.push('instance_steps')
  if (mailed) work.push('outbox_mails')
  return work
}

const changesSomething = (change: InstanceChange) =>
  change.bump || change.current_position !== undefined || change.status !== undefined || change.ended_at !== undefined

/** The note a person gave, as the activity message quotes it. */
const quoted = (note: string | null) => (note ? `: "${note}"` : '')

/** A step that ended and whose process moves on to the step after it, or completes. */
interface Ended {
  instance: InstanceRow
  step: InstanceStepRow
  /** A decision's branch: the position the process continues at (null: it completes), not the next one. */
  branch?: Branch
}

/** The branch a decision step took. */
export interface Branch {
  decision: 'yes' | 'no' | null
  continueAt: number | null
}

/** A step the process enters: it starts now, or waits for its start time. */
interface Entered {
  instance: InstanceRow
  step: InstanceStepRow
  previousEnd: Date
}

/**
 * The changes of one transaction to running processes (the state machine of docs/architecture.md,
 * Processes and steps), gathered and then written with a few multi-row statements in `flush`, however many
 * processes change: one API request's single change, or a scheduler batch of outcomes. The caller
 * holds each process's row lock (lock order: instance, then deliveries, then steps) before it
 * describes a change.
 */
export class ProcessChanges {
  private readonly activities: NewActivityRow[] = []
  private readonly mails: { instance: InstanceRow; cause: MailCause }[] = []
  private readonly steps = new Map<string, StepChange>()
  private readonly instances = new Map<string, InstanceChange>()
  private readonly ended: Ended[] = []
  private readonly entered: Entered[] = []
  private readonly starting: StepStart[] = []
  /** The states a step may be in for `startStep` or `enterStep` to start it. */
  private readonly fromStates = new Set<StepState>(['pending'])
  /** Steps after ended ones, keyed `instanceId:position`, already read (undefined: there is none). */
  private readonly nextSteps = new Map<string, InstanceStepRow | undefined>()
  /** A process that starts, inserted by flush's statement. */
  private inserts: NewProcess | undefined

  /** `zones`: each tenant's time zone, for start times and deadlines in calendar days. */
  constructor(private readonly db: DB, readonly now: Date, private readonly zones: Map<string, string>) {}

  /** Tells which step follows `step` (from rows that hold it, if there is one), so flush need not read it. */
  knowNextOf(step: InstanceStepRow, rows: InstanceStepRow[]): void {
    const next = rows.find((r) => r.instance_id === step.instance_id && r.position === step.position + 1)
    this.nextSteps.set(`${step.instance_id}:${step.position + 1}`, next)
  }

  /**
   * A new process (a start), inserted by the statement that writes the changes, which are made to its
   * rows before they are inserted: its first step starts in the same round trip. Everything else this
   * flush writes belongs to it, and none of it is written when its idempotency key is taken, or when
   * `known` facts it was planned from no longer hold.
   */
  insertProcess(instance: InstanceRow, steps: InstanceStepRow[], known?: KnownStart): void {
    this.inserts = { instance, steps, known }
  }

  /** An activity on the records the step refers to (all linked records for process events). */
  activity(instance: InstanceRow, step: InstanceStepRow | null, kind: string, message: string, data: JsonObject = {}): void {
    this.activities.push(activityRow(instance, step, this.now, kind, message, data))
  }

  /** An activity not about a process step, e.g. on a record a trigger's call was about. */
  rawActivity(row: NewActivityRow): void {
    this.activities.push(row)
  }

  mail(instance: InstanceRow, cause: Omit<MailCause, 'now'>): void {
    this.mails.push({ instance, cause: { ...cause, now: this.now } })
  }

  /** One change to the process, from the API or the scheduler, moves its version (and so its ETag) on by one. */
  bump(instance: InstanceRow): void {
    this.instanceChange(instance).bump = true
  }

  /**
   * Ends the current step as done or skipped; the process moves on to the next step, or completes.
   * With a branch (a decision), it continues at the branch's step instead, and the steps in between
   * are skipped as not on the chosen branch (branches.ts).
   */
  endStep(instance: InstanceRow, step: InstanceStepRow, outcome: EndOutcome, note: string | null, by: string, branch?: Branch): void {
    this.steps.set(step.id, { tenant_id: step.tenant_id, id: step.id, state: outcome, ended_at: this.now, note, set_note: true })
    const message = `Step "${step.name}" ${outcome} (${by})${quoted(note)}.`
    this.activity(instance, step, outcome === 'done' ? 'stepDone' : 'stepSkipped', message, note ? { note, by } : { by })
    if (outcome === 'skipped') this.mail(instance, { kind: 'stepSkipped', dedupeKey: `stepSkipped:${step.id}`, step, note })
    this.mailIfOverdue(instance, step)
    if (branch) {
      const where = branch.continueAt === null ? 'the process ends' : `the process continues at step ${branch.continueAt}`
      const taken = branch.decision === null ? '' : `: ${branch.decision}`
      this.activity(instance, step, 'decisionTaken', `Decision "${step.name}"${taken}; ${where}.`, { decision: branch.decision, continueAt: branch.continueAt })
    }
    this.ended.push(branch ? { instance, step, branch } : { instance, step })
  }

  /**
   * A step that ends past its deadline with no mail about it yet (no sweep ran since: no worker was
   * running, or the sweep had not come round) sends it now, whether it is done, skipped or cancelled
   * with its process. The mail's key is the sweep's, so a sweep that reported the step in the meantime
   * leaves one mail.
   */
  mailIfOverdue(instance: InstanceRow, step: InstanceStepRow): void {
    if (OPEN_FOR_DEADLINE.has(step.state) && step.deadline_at && step.deadline_notified_at === null && step.deadline_at <= this.now) {
      this.mail(instance, { kind: 'deadlineMissed', dedupeKey: `deadlineMissed:${step.id}`, step, ended: true })
    }
  }

  /** The step starts now (the scheduler's chore for waiting steps whose time has come), if it is still `from`. */
  startStep(instance: InstanceRow, step: InstanceStepRow, from: StepState): void {
    this.starting.push({ instance, step })
    this.fromStates.add(from)
  }

  /** The process enters this step: it starts now, or waits until its start time. */
  enterStep(instance: InstanceRow, step: InstanceStepRow, previousEnd: Date): void {
    this.entered.push({ instance, step, previousEnd })
  }

  /** A webhook step whose delivery gave up turns into a manual step, and the controller hears of it. */
  failWebhookStep(instance: InstanceRow, step: InstanceStepRow, reason: string, delivery: { id: string; round: number }): void {
    this.setStepState(step, 'failed')
    this.activity(instance, step, 'webhookFailed', `Webhook step "${step.name}" failed: ${reason}.`, { deliveryId: delivery.id, reason })
    this.mail(instance, { kind: 'stepFailed', dedupeKey: `stepFailed:${delivery.id}:${delivery.round}`, step, reason })
  }

  /** An automatic step that could not be carried out turns into a manual step, and the controller hears of it. */
  failAutomaticStep(instance: InstanceRow, step: InstanceStepRow, reason: string): void {
    this.setStepState(step, 'failed')
    this.activity(instance, step, 'automaticStepFailed', `Automatic step "${step.name}" failed: ${reason}.`, { reason })
    this.mail(instance, { kind: 'automaticStepFailed', dedupeKey: `automaticStepFailed:${step.id}`, step, reason })
  }

  /** Whether this transaction changes the step (its state, or it ended). */
  changes(step: InstanceStepRow): boolean {
    return this.steps.has(step.id)
  }

  setStepState(step: InstanceStepRow, state: StepState): void {
    this.steps.set(step.id, { tenant_id: step.tenant_id, id: step.id, state })
  }

  complete(instance: InstanceRow): void {
    Object.assign(this.instanceChange(instance), { status: 'completed', ended_at: this.now })
    this.activity(instance, null, 'processCompleted', `Process "${instance.template_name}" completed.`)
    if (instance.notify_on_completion) this.mail(instance, { kind: 'processCompleted', dedupeKey: `processCompleted:${instance.id}` })
  }

  cancel(instance: InstanceRow, note: string | null): void {
    Object.assign(this.instanceChange(instance), { status: 'cancelled', ended_at: this.now })
    this.activity(instance, null, 'processCancelled', `Process "${instance.template_name}" cancelled${quoted(note)}.`, note ? { note } : {})
  }

  /**
   * Writes everything: the processes that ended a step move on, then each table gets one statement.
   * Returns the rows it wrote, from which an answer can be built without reading them again. With
   * `answer` false (the scheduler's outcome batch, which uses none of it), the rows of the one
   * statement that writes the changes do not come back: no changed or started steps beyond a
   * decision's jumps, no deliveries, no processes, and so no work but mail. With `last`, the caller
   * runs nothing more in its transaction: the statement that writes the changes carries the COMMIT
   * (THEN_COMMIT in src/db/postgres.ts), unless mail follows it.
   */
  async flush({ answer = true, last = false }: { answer?: boolean; last?: boolean } = {}): Promise<Written> {
    // A start's one statement is all it writes (insertProcess): nothing may need a statement of its own.
    if (this.inserts && (this.ended.length > 0 || this.mails.length > 0 || !answer)) {
      throw new Error('A new process is written in one statement, with its rows in the answer: it cannot end steps or send mail in the same flush.')
    }
    const nextOf = ({ step, branch }: Ended) => (branch ? branch.continueAt : step.position + 1)
    const unknown = this.ended.filter((e) => nextOf(e) !== null && !this.nextSteps.has(`${e.step.instance_id}:${nextOf(e)}`))
    const read = await repo.findStepsAt(this.db, unknown.map((e) => ({ tenant_id: e.step.tenant_id, instance_id: e.step.instance_id, position: nextOf(e)! })))
    for (const ended of this.ended) {
      const next = nextOf(ended)
      const key = `${ended.instance.id}:${next}`
      const following = next === null ? undefined : this.nextSteps.has(key) ? this.nextSteps.get(key) : read.get(key)
      if (following) this.entered.push({ instance: ended.instance, step: following, previousEnd: this.now })
      else this.complete(ended.instance)
    }
    const jumped = await writeJumps(this.db, this.ended.flatMap(({ step, branch }) => (branch ? [{ step, ...branch }] : [])), this.now)
    const starting: StepStart[] = [...this.starting]
    for (const { instance, step, previousEnd } of this.entered) {
      if (instance.current_position !== step.position) this.instanceChange(instance).current_position = step.position
      const startAt = step.start_mode === 'daysAfterPrevious'
        ? addCalendarDays(previousEnd, step.start_days ?? 0, this.zoneOf(instance))
        : this.now
      if (startAt.getTime() <= this.now.getTime()) starting.push({ instance, step: { ...step, start_at: startAt } })
      else this.steps.set(step.id, { tenant_id: step.tenant_id, id: step.id, state: 'waiting', start_at: startAt })
    }
    const plan: PlannedChanges = {
      steps: [...this.steps.values()],
      starts: [],
      fromStates: [...this.fromStates],
      instances: [...this.instances.values()].filter(changesSomething),
      activities: this.activities,
      deliveries: [],
      inserts: this.inserts
    }
    await planStarts(this.db, starting, this.now, this.zones, plan)
    const written = await writeChanges(this.db, plan, this.now, { answer, last: last && this.mails.length === 0 })
    await mailControllers(this.db, this.mails)
    const steps = jumped.length === 0 ? written.steps : [...written.steps, ...jumped]
    return { ...written, steps, work: workOf(written, this.mails.length > 0) }
  }

  private instanceChange(instance: InstanceRow): InstanceChange {
    let change = this.instances.get(instance.id)
    if (!change) this.instances.set(instance.id, (change = { tenant_id: instance.tenant_id, id: instance.id, bump: false }))
    return change
  }

  /** The time zone of the instance's tenant (for a decision's "today"). */
  zoneOf(instance: InstanceRow): string {
    return this.zones.get(instance.tenant_id) ?? 'UTC'
  }
}
