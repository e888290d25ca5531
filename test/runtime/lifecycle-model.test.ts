import t from 'tap'
import fc from 'fast-check'
import { sql } from '../../src/db/kysely.js'
import type { Client, Response } from '../helpers/app.js'
import { DAY, HOUR, MINUTE } from '../helpers/clock.js'
import type { Reply } from '../helpers/provider.js'
import { setupRuntime, type Processes } from '../helpers/runtime.js'

// A model-based probe of running processes: random sequences of starts, advances, cancels, retries,
// replays, scheduler passes, clock moves, provider moods and edits of what processes name, with the
// invariants of SPEC.md section 2 and the README checked after every command, through the API and the
// database. LIFECYCLE_RUNS=200 runs more sequences (about 2.5 s each on a 2-core machine: pass
// --timeout=900 to tap); LIFECYCLE_SEED replays a seed; LIFECYCLE_SHRINK shrinks a failure (slow);
// LIFECYCLE_DETAILS tallies the problems the API answered, to see what the sequences reached.
const RUNS = Number(process.env.LIFECYCLE_RUNS ?? 5)
const SEED = process.env.LIFECYCLE_SEED === undefined ? undefined : Number(process.env.LIFECYCLE_SEED)
const MAX_ATTEMPTS = 8
const TIMEOUT_MS = 150

const rt = await setupRuntime(t, { webhookTimeoutMs: TIMEOUT_MS, maxAttempts: MAX_ATTEMPTS, env: { RATE_LIMIT_MAX: '0' } })
type Mood = 'ok' | 'error' | 'slowDown' | 'gone' | 'hang'
let mood: Mood = 'ok'
const replies: Record<Mood, Reply> = {
  ok: { status: 200, body: 'ok' },
  error: { status: 500, body: 'boom' },
  slowDown: { status: 429, headers: { 'retry-after': '90' }, body: 'slow down' },
  gone: { status: 404, body: 'no such hook' },
  hang: { status: 200, body: 'late', delayMs: TIMEOUT_MS * 3 }
}
/** Told of the provider's next call, once. */
let onCall: (() => void) | undefined
rt.provider.always(() => {
  onCall?.()
  onCall = undefined
  return replies[mood]
})

interface Side extends Processes {
  api: Client
  tenantId: string
  controllerId: string
  workerId: string
  propertyId: string
  templates: string[]
}

type Fixture = Processes & { tenant: { id: string; client: Client }; controller: { id: string }; worker: { id: string }; propertyId: string }

async function side(p: Fixture): Promise<Side> {
  const child = await p.template([{ kind: 'task', name: 'Child task' }])
  const templates = [
    await p.template([
      { kind: 'webhook', name: 'Value it', refersTo: { property: true }, deadlineDays: 1 },
      { kind: 'task', name: 'Check the value', start: { mode: 'daysAfterPrevious', days: 1 }, deadlineDays: 2 }
    ], { notifyOnCompletion: true }),
    await p.template([
      { kind: 'task', name: 'Prepare', deadlineDays: 1 },
      { kind: 'webhook', name: 'Publish', refersTo: { property: true }, deadlineDays: 1, start: { mode: 'daysAfterPrevious', days: 2 } },
      { kind: 'email', name: 'Tell the controller', email: { mode: 'automatic', to: 'controller', subject: 'Published {{process.id}}', body: 'Done.' } },
      { kind: 'task', name: 'Follow up', refersTo: { property: true }, responsibility: 'propertyMaintainer' }
    ]),
    await p.template([
      { kind: 'writeValues', name: 'Bump the price', refersTo: { property: true }, writeValues: { values: [{ record: 'property', field: 'price', value: { add: [{ field: 'property.price' }, 1] } }] } },
      { kind: 'decision', name: 'Expensive?', refersTo: { property: true }, decision: { mode: 'automatic', condition: { gt: [{ field: 'property.price' }, 450002] }, yes: 3, no: 4 } },
      { kind: 'task', name: 'Call the owner', deadlineDays: 1, responsibility: { user: p.controller.id } },
      { kind: 'followUpProcess', name: 'Hand over', followUp: { templateId: child, waitForCompletion: true } }
    ]),
    await p.template([
      { kind: 'decision', name: 'Sell?', decision: { mode: 'manual', yes: 2, no: 3 } },
      { kind: 'email', name: 'Write by hand', email: { mode: 'manual', to: 'controller', subject: 'By hand', body: 'Hello' }, deadlineDays: 1 },
      { kind: 'webhook', name: 'Value again', refersTo: { property: true }, start: { mode: 'daysAfterPrevious', days: 1 } }
    ])
  ]
  return {
    ...p, api: p.tenant.client, tenantId: p.tenant.id, controllerId: p.controller.id, workerId: p.worker.id, propertyId: p.propertyId, templates
  }
}

// newRuntimeTenant's tenant has its people as the first one has, though its type leaves them out.
const sides = [await side(rt), await side(await rt.newRuntimeTenant('Zweite Immobilien') as unknown as Fixture)]

// ---- the model -----------------------------------------------------------------------------------

interface Model {
  /** Processes started in this run: which side, and its id. */
  instances: { side: number; id: string }[]
}

interface Real {
  /** The highest version seen of each process. */
  versions: Map<string, number>
  shapes: Map<string, { shape: string; version: number }>
  log: string[]
}

const problems: string[] = []
/** What the run did, by command and answer: a probe that only meets 404s finds nothing. */
const tally = new Map<string, number>()

function checkAnswer(what: string, r: Response): void {
  const key = `${what.replace(/\(.*$/, '')} ${r.statusCode}`
  tally.set(key, (tally.get(key) ?? 0) + 1)
  if (process.env.LIFECYCLE_DETAILS && r.statusCode >= 400) {
    const detail = `${key} ${String(r.data?.detail).replace(/[0-9a-f-]{36}/g, 'ID').replace(/"[^"]*"/g, 'N').slice(0, 90)}`
    tally.set(detail, (tally.get(detail) ?? 0) + 1)
  }
  if (r.statusCode >= 500) problems.push(`${what}: ${r.statusCode} ${r.body}`)
  else if (r.statusCode >= 400) {
    const type = String(r.headers['content-type'] ?? '')
    if (!type.startsWith('application/problem+json')) problems.push(`${what}: ${r.statusCode} not problem+json (${type})`)
    else if (!r.data?.detail || typeof r.data.detail !== 'string') problems.push(`${what}: ${r.statusCode} without a detail: ${r.body}`)
  }
}

const pick = <T>(items: T[], index: number): T | undefined => items.length === 0 ? undefined : items[index % items.length]

/** One of the run's processes, a running one where there is one (an ended one answers 409 to everything). */
async function pickProcess(model: Model, index: number): Promise<{ side: number; id: string } | undefined> {
  if (model.instances.length === 0) return undefined
  const running = await rows<{ id: string }>(sql`select id from process_instances where status = 'running' and id = any(${model.instances.map((i) => i.id)}::uuid[])`)
  const ids = new Set(running.map((r) => r.id))
  return pick(index % 4 === 3 ? model.instances : model.instances.filter((i) => ids.has(i.id)), index) ?? pick(model.instances, index)
}

abstract class Command implements fc.AsyncCommand<Model, Real> {
  check(): boolean {
    return true
  }

  async run(model: Model, real: Real): Promise<void> {
    real.log.push(this.toString())
    await this.act(model, real)
    await checkInvariants(real, this.afterPass)
    if (problems.length > 0) {
      const found = problems.splice(0)
      throw new Error(`after ${this.toString()}:\n  ${found.join('\n  ')}\nsequence:\n  ${real.log.join('\n  ')}`)
    }
  }

  protected afterPass = false
  abstract act(model: Model, real: Real): Promise<void>
  abstract toString(): string
}

class Start extends Command {
  constructor(readonly side: number, readonly template: number) { super() }
  async act(model: Model): Promise<void> {
    const s = sides[this.side]!
    const r = await s.api.post('/v1/process-instances', { templateId: s.templates[this.template], responsibleUserId: s.workerId, propertyId: s.propertyId })
    checkAnswer(this.toString(), r)
    if (r.statusCode === 201) model.instances.push({ side: this.side, id: r.data.id })
  }

  toString(): string { return `start(side ${this.side}, template ${this.template})` }
}

/** The process a command picked (by `which`), read through its side's API; undefined when none or the read failed (noted). */
async function readProcess(command: Command, model: Model, which: number) {
  const target = await pickProcess(model, which)
  if (!target) return undefined
  const s = sides[target.side]!
  const read = await s.api.get(`/v1/process-instances/${target.id}`)
  checkAnswer(`${command} read`, read)
  if (read.statusCode !== 200) {
    problems.push(`${command}: reading process ${target.id} answered ${read.statusCode} ${read.body}`)
    return undefined
  }
  return { target, s, instance: read.data }
}

type StepIdMode = 'none' | 'current' | 'wrong'

class Advance extends Command {
  constructor(readonly which: number, readonly outcome: 'done' | 'skipped', readonly stepId: StepIdMode, readonly decision: 'yes' | 'no' | undefined) { super() }
  async act(model: Model): Promise<void> {
    const read = await readProcess(this, model, this.which)
    if (!read) return
    const { target, s, instance } = read
    const current = instance.steps.find((x: { id: string }) => x.id === instance.currentStep?.id) ?? instance.steps[0]
    const other = instance.steps.find((x: { id: string }) => x.id !== current?.id) ?? current
    const body: Record<string, unknown> = { outcome: this.outcome }
    if (this.stepId === 'current') body.stepId = current?.id
    if (this.stepId === 'wrong') body.stepId = other?.id
    if (this.decision && current?.kind === 'decision') body.decision = this.decision
    checkAnswer(this.toString(), await s.api.post(`/v1/process-instances/${target.id}/advance`, body))
  }

  toString(): string { return `advance(#${this.which}, ${this.outcome}, stepId ${this.stepId}${this.decision ? `, ${this.decision}` : ''})` }
}

class Cancel extends Command {
  constructor(readonly which: number) { super() }
  async act(model: Model): Promise<void> {
    const target = await pickProcess(model, this.which)
    if (!target) return
    checkAnswer(this.toString(), await sides[target.side]!.api.post(`/v1/process-instances/${target.id}/cancel`, { note: 'probe' }))
  }

  toString(): string { return `cancel(#${this.which})` }
}

class Retry extends Command {
  constructor(readonly which: number, readonly step: number) { super() }
  async act(model: Model): Promise<void> {
    const read = await readProcess(this, model, this.which)
    if (!read) return
    const { target, s, instance } = read
    const failed = instance.steps.find((x: { state: string }) => x.state === 'failed')
    const step = failed ?? pick(instance.steps, this.step)
    checkAnswer(this.toString(), await s.api.post(`/v1/process-instances/${target.id}/steps/${step.id}/retry`))
  }

  toString(): string { return `retry(#${this.which}, step ${this.step})` }
}

class Replay extends Command {
  constructor(readonly which: number) { super() }
  async act(model: Model): Promise<void> {
    const target = await pickProcess(model, this.which)
    if (!target) return
    const s = sides[target.side]!
    const list = await s.api.get(`/v1/deliveries?instanceId=${target.id}`)
    checkAnswer(`${this} list`, list)
    const delivery = pick(list.data?.items ?? [], this.which)
    if (!delivery) return
    checkAnswer(this.toString(), await s.api.post(`/v1/deliveries/${(delivery as { id: string }).id}/replay`))
  }

  toString(): string { return `replay(#${this.which})` }
}

class Clock extends Command {
  constructor(readonly ms: number) { super() }
  async act(): Promise<void> {
    rt.clock.advance(this.ms)
  }

  toString(): string { return `clock(+${this.ms / MINUTE} min)` }
}

class Pass extends Command {
  protected override afterPass = true
  async act(): Promise<void> {
    await rt.scheduler.runOnce()
  }

  toString(): string { return 'pass()' }
}

/** An advance and a scheduler pass at the same moment. */
class Race extends Command {
  constructor(readonly which: number, readonly outcome: 'done' | 'skipped', readonly cancel: boolean) { super() }
  async act(model: Model): Promise<void> {
    const target = await pickProcess(model, this.which)
    if (!target) return
    const s = sides[target.side]!
    const path = `/v1/process-instances/${target.id}/${this.cancel ? 'cancel' : 'advance'}`
    const [answer] = await Promise.all([s.api.post(path, this.cancel ? {} : { outcome: this.outcome }), rt.scheduler.runOnce()])
    checkAnswer(this.toString(), answer)
  }

  toString(): string { return `race(#${this.which}, ${this.cancel ? 'cancel' : this.outcome}, pass)` }
}

/** Two or three intents on one process at once, with a pass: one intent ends at most one step. */
class Burst extends Command {
  constructor(readonly which: number, readonly intents: ('done' | 'skipped' | 'cancel' | 'retry')[]) { super() }
  async act(model: Model): Promise<void> {
    const target = await pickProcess(model, this.which)
    if (!target) return
    const s = sides[target.side]!
    const instance = (await s.api.get(`/v1/process-instances/${target.id}`)).data
    const current = instance.steps?.find((x: { id: string }) => x.id === instance.currentStep?.id)
    if (!current) return
    const base = `/v1/process-instances/${target.id}`
    const answers = await Promise.all([
      ...this.intents.map((intent) => intent === 'cancel' ? s.api.post(`${base}/cancel`, {})
        : intent === 'retry' ? s.api.post(`${base}/steps/${current.id}/retry`)
        : s.api.post(`${base}/advance`, { outcome: intent, stepId: current.id, ...(current.kind === 'decision' ? { decision: 'yes' } : {}) })),
      rt.scheduler.runOnce()
    ])
    const replies = answers.slice(0, this.intents.length) as Response[]
    replies.forEach((r) => checkAnswer(this.toString(), r))
    const advanced = replies.filter((r, i) => r.statusCode === 200 && this.intents[i] !== 'cancel' && this.intents[i] !== 'retry').length
    if (advanced > 1) problems.push(`${this}: ${advanced} advances of step ${current.id} succeeded`)
  }

  toString(): string { return `burst(#${this.which}, ${this.intents.join('+')}, pass)` }
}

/**
 * A worker's call outlives its lease: another worker reaps and calls again while the first is still
 * in flight. Fencing must keep the first one's outcome out.
 */
class LeaseLost extends Command {
  protected override afterPass = true
  async act(): Promise<void> {
    const slow = rt.newScheduler({ leaseMs: 1000 })
    const other = rt.newScheduler({ leaseMs: 1000 })
    // The second worker comes once the first one's call is in flight (or its pass made none).
    const arrived = new Promise<void>((resolve) => (onCall = resolve))
    const first = slow.runOnce()
    await Promise.race([arrived, first])
    onCall = undefined
    rt.clock.advance(2000)
    await other.runOnce()
    await first
    await other.runOnce()
  }

  toString(): string { return 'leaseLost()' }
}

/** Hours pass with a pass each: retries run out, deadlines pass, waiting steps start. */
class Drain extends Command {
  protected override afterPass = true
  async act(): Promise<void> {
    for (let i = 0; i < 9; i += 1) {
      rt.clock.advance(6 * HOUR + MINUTE)
      await rt.scheduler.runOnce()
    }
  }

  toString(): string { return 'drain()' }
}

class Provider extends Command {
  constructor(readonly mood: Mood) { super() }
  async act(): Promise<void> {
    mood = this.mood
  }

  toString(): string { return `provider(${this.mood})` }
}

class Activation extends Command {
  constructor(readonly side: number, readonly on: boolean) { super() }
  async act(): Promise<void> {
    const s = sides[this.side]!
    const path = `/v1/marketplace-services/${rt.serviceId}/activation`
    checkAnswer(this.toString(), this.on ? await s.api.put(path) : await s.api.delete(path))
  }

  toString(): string { return `activation(side ${this.side}, ${this.on ? 'on' : 'off'})` }
}

/** The operator switches the service off or on for everyone (a tenant cannot deactivate it while templates use it). */
class ServiceActive extends Command {
  constructor(readonly active: boolean) { super() }
  async act(): Promise<void> {
    checkAnswer(this.toString(), await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { active: this.active }, { 'if-match': '*' }))
  }

  toString(): string { return `service(${this.active ? 'active' : 'inactive'})` }
}

class EditPeople extends Command {
  constructor(readonly side: number, readonly action: 'mailController' | 'deleteController' | 'deleteWorker' | 'price' | 'deleteProperty' | 'maintainer') { super() }
  async act(): Promise<void> {
    const s = sides[this.side]!
    const linked = await rows<{ n: number }>(sql`select count(*)::int as n from process_instances where property_id = ${s.propertyId}`)
    const responsible = await rows<{ n: number }>(sql`select count(*)::int as n from process_instances where responsible_user_id = ${s.workerId}`)
    let r: Response
    switch (this.action) {
      case 'mailController': r = await s.api.patch(`/v1/users/${s.controllerId}`, { email: `clara+${Date.now()}@example.com` }); break
      case 'deleteController': r = await s.api.delete(`/v1/users/${s.controllerId}`); break
      case 'deleteWorker': r = await s.api.delete(`/v1/users/${s.workerId}`); break
      case 'price': r = await s.api.patch(`/v1/properties/${s.propertyId}`, { fields: { price: 440000 + (Date.now() % 20000) } }); break
      case 'deleteProperty': r = await s.api.delete(`/v1/properties/${s.propertyId}`); break
      case 'maintainer': r = await s.api.patch(`/v1/properties/${s.propertyId}`, { maintainerUserId: Date.now() % 2 === 0 ? null : s.workerId }); break
    }
    checkAnswer(this.toString(), r)
    if (r.statusCode < 300 && this.action === 'deleteProperty') {
      if (linked[0]!.n > 0) problems.push(`${this}: deleted a property ${linked[0]!.n} processes link (${r.statusCode})`)
      s.propertyId = (await s.api.post('/v1/properties', { maintainerUserId: s.workerId, fields: { price: 450000 } })).data.id
    }
    if (r.statusCode < 300 && this.action === 'deleteWorker') {
      if (responsible[0]!.n > 0) problems.push(`${this}: deleted the user ${responsible[0]!.n} processes have as responsible (${r.statusCode})`)
      s.workerId = (await s.api.post('/v1/users', { name: 'Willi Worker', email: 'willi@example.com' })).data.id
    }
    if (r.statusCode < 300 && this.action === 'deleteController') problems.push(`${this}: deleted the controller templates name (${r.statusCode})`)
  }

  toString(): string { return `edit(side ${this.side}, ${this.action})` }
}

class EditTemplate extends Command {
  constructor(readonly side: number, readonly template: number, readonly action: 'deadline' | 'deactivate' | 'activate' | 'deleteStep' | 'addTask') { super() }
  async act(): Promise<void> {
    const s = sides[this.side]!
    const id = s.templates[this.template]!
    const template = (await s.api.get(`/v1/process-templates/${id}`)).data
    const steps = template.steps as { id: string; kind: string; deadlineDays: number | null }[]
    const anyVersion = { 'if-match': '*' }
    let r: Response
    switch (this.action) {
      case 'deadline': {
        const step = steps.find((x) => x.kind === 'task' || x.kind === 'webhook') ?? steps[0]!
        r = await s.api.patch(`/v1/process-templates/${id}/steps/${step.id}`, { deadlineDays: step.deadlineDays === null ? 1 : null }, anyVersion)
        break
      }
      case 'deactivate': r = await s.api.patch(`/v1/process-templates/${id}`, { active: false }, anyVersion); break
      case 'activate': r = await s.api.patch(`/v1/process-templates/${id}`, { active: true }, anyVersion); break
      case 'deleteStep': {
        // The last task: deleting a branch's target is refused, which is fine as well.
        const task = [...steps].reverse().find((x) => x.kind === 'task')
        if (!task || steps.length <= 1) return
        r = await s.api.delete(`/v1/process-templates/${id}/steps/${task.id}`, anyVersion)
        break
      }
      case 'addTask': r = await s.api.post(`/v1/process-templates/${id}/steps`, { kind: 'task', name: 'Added later', deadlineDays: 1 }); break
    }
    checkAnswer(this.toString(), r)
  }

  toString(): string { return `template(side ${this.side}, ${this.template}, ${this.action})` }
}

/** The operator moves a tenant to another time zone: what is worked out afterwards follows it. */
class TimeZone extends Command {
  constructor(readonly side: number, readonly zone: string) { super() }
  async act(): Promise<void> {
    checkAnswer(this.toString(), await rt.operator.patch(`/v1/tenants/${sides[this.side]!.tenantId}`, { timeZone: this.zone }))
  }

  toString(): string { return `timeZone(side ${this.side}, ${this.zone})` }
}

class Smtp extends Command {
  constructor(readonly refusing: boolean) { super() }
  async act(): Promise<void> {
    rt.smtp.refusing = this.refusing
  }

  toString(): string { return `smtp(${this.refusing ? 'refusing' : 'taking'})` }
}

// ---- invariants ----------------------------------------------------------------------------------

const OPEN = new Set(['waiting', 'due', 'running', 'failed'])

async function rows<T>(query: ReturnType<typeof sql<T>>): Promise<T[]> {
  return (await query.execute(rt.db)).rows
}

async function checkInvariants(real: Real, afterPass: boolean): Promise<void> {
  const instances = await rows<{ id: string; tenant_id: string; status: string; current_position: number | null; version: number; ended_at: Date | null; parent_step_id: string | null }>(
    sql`select id, tenant_id, status, current_position, version, ended_at, parent_step_id from process_instances`)
  const now = rt.clock.now()
  const steps = await rows<{
    id: string; instance_id: string; position: number; kind: string; state: string; deadline_at: Date | null; ended_at: Date | null
    deadline_notified_at: Date | null; automatic: boolean; assignee_user_id: string | null; start_at: Date | null; started_at: Date | null; settings: { followUp?: { waitForCompletion?: boolean } }
  }>(sql`select id, instance_id, position, kind, state, deadline_at, ended_at, deadline_notified_at, automatic, assignee_user_id, start_at, started_at, settings from instance_steps order by instance_id, position`)
  const byInstance = new Map<string, typeof steps>()
  for (const step of steps) {
    const list = byInstance.get(step.instance_id) ?? []
    list.push(step)
    byInstance.set(step.instance_id, list)
  }
  const deliveries = await rows<{ id: string; instance_id: string | null; step_id: string | null; status: string; round: number; lease_owner: string | null; lease_expires_at: Date | null; attempt_count: number }>(
    sql`select id, instance_id, step_id, status, round, lease_owner, lease_expires_at, attempt_count from deliveries`)

  for (const instance of instances) {
    const its = byInstance.get(instance.id) ?? []
    const states = its.map((s) => `${s.position}:${s.kind}:${s.state}`).join(' ')
    const seen = real.versions.get(instance.id) ?? 0
    if (instance.version < seen) problems.push(`instance ${instance.id} version went back from ${seen} to ${instance.version}`)
    real.versions.set(instance.id, Math.max(seen, instance.version))
    // What a client polling with If-None-Match sees: a change it would be told of moves the version on.
    // A worker's claim (due -> running) does not, by design.
    const shape = `${instance.status} ${instance.current_position} ${its.map((s) => s.state === 'running' && s.kind === 'webhook' ? 'due' : s.state).join(',')}`
    const before = real.shapes.get(instance.id)
    if (before && before.shape !== shape && before.version === instance.version) problems.push(`instance ${instance.id} changed (${before.shape} -> ${shape}) without a new version ${instance.version}`)
    real.shapes.set(instance.id, { shape, version: instance.version })
    if (instance.status !== 'running' && instance.ended_at === null) problems.push(`${instance.status} instance ${instance.id} has no endedAt`)
    for (const s of its) {
      if (['due', 'running', 'failed'].includes(s.state) && s.assignee_user_id === null) problems.push(`started step ${s.id} (${s.kind} ${s.state}) has no assignee`)
      if (['due', 'running', 'failed', 'done'].includes(s.state) && s.started_at === null && !(s.state === 'done' && s.kind === 'decision')) problems.push(`step ${s.id} (${s.kind} ${s.state}) has no startedAt`)
      if (['done', 'skipped', 'cancelled'].includes(s.state) && s.ended_at === null) problems.push(`ended step ${s.id} (${s.kind} ${s.state}) has no endedAt`)
      if (s.deadline_at && s.ended_at && s.ended_at >= s.deadline_at && ['done', 'skipped'].includes(s.state) && s.started_at) {
        if (!(await rows<{ n: number }>(sql`select 1 as n from outbox_mails where dedupe_key = ${`deadlineMissed:${s.id}`}`)).length) {
          problems.push(`step ${s.id} (${s.kind}) ended ${s.ended_at.toISOString()} past its deadline ${s.deadline_at.toISOString()} without a mail`)
        }
      }
      if (afterPass && instance.status === 'running' && s.state === 'waiting' && s.start_at && s.start_at <= now) problems.push(`step ${s.id} (${s.kind}) still waiting after a pass, its start ${s.start_at.toISOString()} passed`)
      if (afterPass && instance.status === 'running' && s.state === 'due' && s.automatic && s.kind !== 'email') problems.push(`automatic step ${s.id} (${s.kind}) still due after a pass: ${states}`)
      if (afterPass && s.kind === 'followUpProcess' && s.state === 'running' && s.settings.followUp?.waitForCompletion) {
        const child = instances.find((c) => c.parent_step_id === s.id)
        if (!child) problems.push(`follow-up step ${s.id} running without a child`)
        else if (child.status !== 'running') problems.push(`follow-up step ${s.id} still running after a pass while its child is ${child.status}`)
      }
    }
    if (instance.status === 'running') {
      const open = its.filter((s) => OPEN.has(s.state))
      if (open.length !== 1) problems.push(`running instance ${instance.id} has ${open.length} open steps: ${states}`)
      const current = its.find((s) => s.position === instance.current_position)
      if (!current || !OPEN.has(current.state)) problems.push(`running instance ${instance.id} at ${instance.current_position} whose step is not open: ${states}`)
      for (const s of its) {
        if (current && s.position < current.position && !['done', 'skipped'].includes(s.state)) problems.push(`running instance ${instance.id}: step before the current one is ${s.state}: ${states}`)
        if (current && s.position > current.position && s.state !== 'pending') problems.push(`running instance ${instance.id}: step after the current one is ${s.state}: ${states}`)
      }
    } else if (instance.status === 'completed') {
      if (its.some((s) => !['done', 'skipped'].includes(s.state))) problems.push(`completed instance ${instance.id} has steps not ended: ${states}`)
    } else if (instance.status === 'cancelled') {
      if (its.some((s) => OPEN.has(s.state) || s.state === 'pending')) problems.push(`cancelled instance ${instance.id} has open steps: ${states}`)
      // A replay by hand (a new round) may call again for an ended step, a cancelled process's too.
      const queued = deliveries.filter((d) => d.instance_id === instance.id && d.round === 1 && (d.status === 'pending' || d.status === 'running'))
      if (queued.length > 0) problems.push(`cancelled instance ${instance.id} has ${queued.length} queued deliveries (${queued.map((d) => d.status)})`)
    }
    for (const s of its) {
      if (s.kind !== 'webhook') continue
      const ofStep = deliveries.filter((d) => d.step_id === s.id)
      if (ofStep.length > 1) problems.push(`step ${s.id} has ${ofStep.length} deliveries`)
      const d = ofStep[0]
      if (s.state === 'failed' && d?.status !== 'failed') problems.push(`webhook step ${s.id} failed while its delivery is ${d?.status}: ${states}`)
      if (s.state === 'running' && d?.status !== 'running') problems.push(`webhook step ${s.id} running while its delivery is ${d?.status}`)
      if (d?.status === 'running' && d.round === 1 && s.state !== 'running') problems.push(`delivery of step ${s.id} running while the step is ${s.state}`)
      if (d?.status === 'pending' && d.round === 1 && !['due', 'running'].includes(s.state)) problems.push(`delivery of step ${s.id} pending while the step is ${s.state}: ${states}`)
    }
  }

  for (const d of deliveries) {
    if (d.status === 'running' && d.lease_owner === null) problems.push(`delivery ${d.id} running without a lease`)
    if (afterPass && d.status === 'running') problems.push(`delivery ${d.id} still running after a pass`)
  }
  const attempts = await rows<{ delivery_id: string; round: number; n: number; ok: number; numbers: number }>(
    sql`select delivery_id, round, count(*)::int as n, count(*) filter (where outcome = 'succeeded')::int as ok, count(distinct attempt_number)::int as numbers
        from delivery_attempts group by delivery_id, round`)
  const succeeded = new Map<string, number>()
  for (const a of attempts) {
    if (a.n > MAX_ATTEMPTS) problems.push(`delivery ${a.delivery_id} round ${a.round} has ${a.n} attempts`)
    if (a.numbers !== a.n) problems.push(`delivery ${a.delivery_id} round ${a.round} repeats an attempt number`)
    succeeded.set(a.delivery_id, (succeeded.get(a.delivery_id) ?? 0) + a.ok)
  }
  // A replay calls again on purpose: one success per round at most.
  for (const a of attempts) if (a.ok > 1) problems.push(`delivery ${a.delivery_id} round ${a.round} succeeded ${a.ok} times`)

  const mails = await rows<{ kind: string; step_id: string | null; instance_id: string | null; dedupe_key: string; created_at: Date; tenant_id: string }>(
    sql`select kind, step_id, instance_id, dedupe_key, created_at, tenant_id from outbox_mails`)
  const stepById = new Map(steps.map((s) => [s.id, s]))
  const deadlineMails = new Map<string, number>()
  for (const m of mails) {
    if (m.kind !== 'deadlineMissed') continue
    // A controller's mail names its step in its key only.
    const key = m.dedupe_key.slice('deadlineMissed:'.length)
    deadlineMails.set(key, (deadlineMails.get(key) ?? 0) + 1)
    const step = stepById.get(key)
    if (!step) continue
    // A mail's created_at is the database's time, not the test clock's: the step's mark says when it was noticed.
    if (!step.deadline_at) problems.push(`deadline mail for step ${step.id} without a deadline`)
    else if (step.deadline_notified_at && step.deadline_notified_at < step.deadline_at) problems.push(`deadline of step ${step.id} reported at ${step.deadline_notified_at.toISOString()} before it passed ${step.deadline_at.toISOString()}`)
    else if (step.ended_at && step.ended_at < step.deadline_at) problems.push(`deadline mail for step ${step.id} that ended ${step.ended_at.toISOString()} before its deadline ${step.deadline_at.toISOString()}`)
  }
  for (const [key, n] of deadlineMails) if (n > 1) problems.push(`${n} deadline mails for ${key}`)
  const failedMails = new Map<string, number>()
  for (const m of mails.filter((x) => x.kind === 'stepFailed')) failedMails.set(m.dedupe_key, (failedMails.get(m.dedupe_key) ?? 0) + 1)
  for (const [key, n] of failedMails) if (n > 1) problems.push(`${n} failed-step mails for ${key}`)
  // Overdue steps that a pass has seen have their mail.
  if (afterPass) {
    const now = rt.clock.now()
    for (const s of steps) {
      const instance = instances.find((i) => i.id === s.instance_id)
      if (instance?.status !== 'running' || !s.deadline_at || s.deadline_at > now || !OPEN.has(s.state) || s.state === 'waiting') continue
      if (!deadlineMails.has(s.id)) problems.push(`step ${s.id} (${s.state}) past its deadline ${s.deadline_at.toISOString()} has no mail after a pass`)
    }
  }

  const foreign = await rows<{ n: number }>(sql`select count(*)::int as n from activities a join process_instances i on i.id = a.instance_id where i.tenant_id <> a.tenant_id`)
  if (foreign[0]!.n > 0) problems.push(`${foreign[0]!.n} activities name another tenant's process`)

  // A completed process with notifyOnCompletion mails once, a cancelled one never; a step a decision jumps over mails no skip.
  const keys = new Set(mails.map((m) => m.dedupe_key))
  const notified = await rows<{ id: string; status: string; notify_on_completion: boolean }>(sql`select id, status, notify_on_completion from process_instances where status <> 'running'`)
  for (const i of notified) {
    const mailed = keys.has(`processCompleted:${i.id}`)
    if (i.status === 'completed' && i.notify_on_completion && !mailed) problems.push(`completed process ${i.id} sent no completion mail`)
    if ((i.status === 'cancelled' || !i.notify_on_completion) && mailed) problems.push(`${i.status} process ${i.id} sent a completion mail`)
  }
  const jumped = await rows<{ id: string }>(sql`select id from instance_steps where state = 'skipped' and note = 'not on the chosen branch'`)
  for (const j of jumped) if (keys.has(`stepSkipped:${j.id}`)) problems.push(`step ${j.id} a decision jumped over sent a skip mail`)

  // An email step's mail goes out only while the step is on: one skipped or cancelled keeps none queued.
  const queuedStepMails = await rows<{ step_id: string; state: string }>(sql`
    select m.step_id, s.state from outbox_mails m join instance_steps s on s.tenant_id = m.tenant_id and s.id = m.step_id
    where m.kind = 'emailStep' and m.sent_at is null and m.failed_at is null and s.state in ('skipped', 'cancelled', 'pending', 'waiting')`)
  for (const m of queuedStepMails) problems.push(`email step ${m.step_id} is ${m.state} with its mail still queued`)

  // The API's view agrees with the rows: the running list shows each process's current step as it is.
  const byId = new Map(instances.map((i) => [i.id, i]))
  for (const s of sides) {
    const list = await s.api.get('/v1/process-instances?status=running&limit=200')
    checkAnswer('list running', list)
    for (const item of list.data?.items ?? []) {
      const row = byId.get(item.id)
      const current = row && byInstance.get(row.id)?.find((x) => x.position === row.current_position)
      if (!current || item.currentStep?.id !== current.id || item.currentStep?.state !== current.state) {
        problems.push(`list shows process ${item.id} at ${JSON.stringify(item.currentStep)}, the database at ${current?.id} ${current?.state}`)
      }
    }
  }
}

// ---- the run -------------------------------------------------------------------------------------

const which = fc.nat(20)
const advance = fc.tuple(which, fc.constantFrom('done' as const, 'skipped' as const), fc.constantFrom<StepIdMode>('none', 'current', 'current', 'wrong'), fc.constantFrom(undefined, 'yes' as const, 'no' as const))
  .map(([w, o, m, d]) => new Advance(w, o, m, d))
const clock = fc.constantFrom(MINUTE, 15 * MINUTE, HOUR, 6 * HOUR, DAY, 2 * DAY).map((ms) => new Clock(ms))
const commands = [
  fc.tuple(fc.nat(1), fc.nat(3)).map(([s, tpl]) => new Start(s, tpl)),
  fc.tuple(fc.nat(1), fc.nat(3)).map(([s, tpl]) => new Start(s, tpl)),
  advance, advance, clock,
  fc.tuple(which, fc.constantFrom('done' as const, 'skipped' as const), fc.constantFrom<StepIdMode>('none', 'current', 'wrong'), fc.constantFrom(undefined, 'yes' as const, 'no' as const))
    .map(([w, o, m, d]) => new Advance(w, o, m, d)),
  fc.tuple(which, fc.constantFrom('done' as const, 'skipped' as const), fc.constantFrom<StepIdMode>('none', 'current'), fc.constantFrom(undefined, 'yes' as const))
    .map(([w, o, m, d]) => new Advance(w, o, m, d)),
  which.map((w) => new Cancel(w)),
  fc.tuple(which, fc.nat(4)).map(([w, s]) => new Retry(w, s)),
  which.map((w) => new Replay(w)),
  clock,
  fc.constant(new Pass()),
  fc.constant(new Pass()),
  fc.constant(new Pass()),
  fc.tuple(which, fc.constantFrom('done' as const, 'skipped' as const), fc.boolean()).map(([w, o, c]) => new Race(w, o, c)),
  fc.constantFrom<Mood>('ok', 'ok', 'error', 'slowDown', 'gone', 'hang').map((m) => new Provider(m)),
  fc.tuple(fc.nat(1), fc.boolean()).map(([s, on]) => new Activation(s, on)),
  fc.tuple(fc.nat(1), fc.constantFrom('mailController' as const, 'deleteController' as const, 'deleteWorker' as const, 'price' as const, 'deleteProperty' as const, 'maintainer' as const))
    .map(([s, a]) => new EditPeople(s, a)),
  fc.tuple(fc.nat(1), fc.nat(3), fc.constantFrom('deadline' as const, 'deactivate' as const, 'activate' as const, 'activate' as const, 'deleteStep' as const, 'addTask' as const))
    .map(([s, tpl, a]) => new EditTemplate(s, tpl, a)),
  fc.boolean().map((r) => new Smtp(r)),
  fc.boolean().map((a) => new ServiceActive(a)),
  fc.tuple(which, fc.array(fc.constantFrom('done' as const, 'skipped' as const, 'cancel' as const, 'retry' as const), { minLength: 2, maxLength: 3 }))
    .map(([w, intents]) => new Burst(w, intents)),
  fc.constant(new LeaseLost()),
  fc.constant(new Drain()),
  fc.tuple(fc.nat(1), fc.constantFrom('Europe/Berlin', 'America/New_York', 'Pacific/Kiritimati', 'Pacific/Pago_Pago'))
    .map(([s, zone]) => new TimeZone(s, zone))
]

t.test('running processes keep their invariants whatever the API and the scheduler do', async (t) => {
  const result = await fc.check(fc.asyncProperty(fc.commands(commands, { maxCommands: 60, size: 'max' }), async (cmds) => {
    mood = 'ok'
    rt.smtp.refusing = false
    // Each sequence begins with everything switched on: what a sequence before it switched off stays off otherwise.
    await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { active: true }, { 'if-match': '*' })
    for (const s of sides) {
      await s.api.put(`/v1/marketplace-services/${rt.serviceId}/activation`)
      for (const id of s.templates) await s.api.patch(`/v1/process-templates/${id}`, { active: true }, { 'if-match': '*' })
    }
    await fc.asyncModelRun(() => ({ model: { instances: [] }, real: { versions: new Map(), shapes: new Map(), log: [] } }), cmds)
  }), { numRuns: RUNS, ...(SEED === undefined ? {} : { seed: SEED }), endOnFailure: process.env.LIFECYCLE_SHRINK === undefined })
  if (result.failed) t.fail(`seed ${result.seed}, path ${result.counterexamplePath}: ${String(result.errorInstance instanceof Error ? result.errorInstance.message : result.errorInstance)}`)
  else t.pass(`${result.numRuns} sequences`)
  const states = await rows<{ status: string; n: number }>(sql`select status || ' ' || count(*) as status, 0 as n from process_instances group by status`)
  const stepStates = await rows<{ s: string }>(sql`select kind || ':' || state || ' ' || count(*) as s from instance_steps group by kind, state order by 1`)
  const attempts = await rows<{ s: string }>(sql`select outcome || ' ' || count(*) as s from delivery_attempts group by outcome`)
  const mails = await rows<{ s: string }>(sql`select kind || ' ' || count(*) as s from outbox_mails group by kind`)
  t.comment([...tally].sort().map(([k, n]) => `${k}: ${n}`).join(', '))
  t.comment(`processes: ${states.map((x) => x.status).join(', ')}; steps: ${stepStates.map((x) => x.s).join(', ')}`)
  t.comment(`attempts: ${attempts.map((x) => x.s).join(', ')}; mails: ${mails.map((x) => x.s).join(', ')}; calls: ${rt.provider.calls.length}, mails received: ${rt.smtp.mails.length}`)
})
