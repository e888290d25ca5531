import type { AddressInfo } from 'node:net'
import pg from 'pg'
import t from 'tap'
import { MINUTE } from '../helpers/clock.js'
import { setupRuntime } from '../helpers/runtime.js'

// Bursts of concurrent intents on the same processes and templates, sent over real HTTP to the app
// listening on 127.0.0.1, with the scheduler claiming the same steps; the invariants are checked on
// the database's rows, read with a plain pg client.

const rt = await setupRuntime(t, { env: { RATE_LIMIT_MAX: '0' } })
await rt.app.listen({ port: 0, host: '127.0.0.1' })
const origin = `http://127.0.0.1:${(rt.app.server.address() as AddressInfo).port}`
const pgc = new pg.Client({ connectionString: rt.databaseUrl })
await pgc.connect()
t.teardown(() => pgc.end())

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests read JSON and rows freely
type Loose = any

interface Answer { status: number; data: Loose; headers: Headers }

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const response = await fetch(`${origin}${path}`, {
    method,
    headers: { authorization: `Bearer ${rt.tenant.key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  const text = await response.text()
  return { status: response.status, data: text ? JSON.parse(text) : undefined, headers: response.headers }
}

function tally(answers: { label: string; status: number }[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const { label, status } of answers) counts[`${label} ${status}`] = (counts[`${label} ${status}`] ?? 0) + 1
  return counts
}

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[items[i], items[j]] = [items[j]!, items[i]!]
  }
  return items
}

/** Runs `action` after 0–15 ms, so that the intents of a burst land in every order. */
async function jittered<T>(action: () => Promise<T>): Promise<T> {
  await new Promise((resolve) => setTimeout(resolve, Math.random() * 15))
  return action()
}

const TERMINAL = ['done', 'skipped', 'cancelled']

/** The rows of a process, and every invariant that must hold between them whatever raced. */
async function checkProcess(id: string): Promise<{ problems: string[]; instance: Loose; steps: Loose[]; activities: Loose[]; deliveries: Loose[] }> {
  const problems: string[] = []
  const instance = (await pgc.query('select * from process_instances where id = $1', [id])).rows[0]
  const steps = (await pgc.query('select * from instance_steps where instance_id = $1 order by position', [id])).rows
  const activities = (await pgc.query('select * from activities where instance_id = $1 order by created_at, id', [id])).rows
  const deliveries = (await pgc.query('select * from deliveries where instance_id = $1', [id])).rows
  const mails = (await pgc.query(`select * from outbox_mails where dedupe_key like any($1)`, [steps.map((s) => `%${s.id}%`)])).rows
  const attempts = (await pgc.query('select a.* from delivery_attempts a join deliveries d on d.id = a.delivery_id where d.instance_id = $1', [id])).rows

  if (instance.status === 'running') {
    const current = steps.find((s) => s.position === instance.current_position)
    if (!current) problems.push('running without a current step')
    for (const s of steps) {
      if (s.position < instance.current_position && !TERMINAL.includes(s.state)) problems.push(`step ${s.position} before the current one is ${s.state}`)
      if (s.position > instance.current_position && s.state !== 'pending') problems.push(`step ${s.position} after the current one is ${s.state}`)
    }
    if (current && (TERMINAL.includes(current.state) || current.state === 'pending')) problems.push(`the current step is ${current.state}`)
  } else if (instance.status === 'completed') {
    for (const s of steps) if (!['done', 'skipped'].includes(s.state)) problems.push(`completed with step ${s.position} ${s.state}`)
  } else if (instance.status === 'cancelled') {
    for (const s of steps) if (!TERMINAL.includes(s.state)) problems.push(`cancelled with step ${s.position} ${s.state}`)
  }
  for (const s of steps) {
    const ending = activities.filter((a) => a.step_id === s.id && ['stepDone', 'stepSkipped'].includes(a.kind))
    const expected = ['done', 'skipped'].includes(s.state) ? 1 : 0
    if (ending.length !== expected) problems.push(`step ${s.position} (${s.state}) has ${ending.length} ending activities: ${ending.map((a) => a.kind)}`)
    const skippedMails = mails.filter((m) => m.dedupe_key === `stepSkipped:${s.id}`).length
    if (skippedMails !== (s.state === 'skipped' ? 1 : 0)) problems.push(`step ${s.position} (${s.state}) has ${skippedMails} skip mails`)
    const delivery = deliveries.filter((d) => d.step_id === s.id)
    if (s.kind === 'webhook' && s.state !== 'pending') {
      if (delivery.length !== 1) problems.push(`step ${s.position} has ${delivery.length} deliveries`)
      const d = delivery[0]
      const expectedStatus: Record<string, string[]> = {
        done: ['succeeded', 'failed'], skipped: ['cancelled', 'failed'], cancelled: ['cancelled', 'failed'], due: ['pending'], running: ['leased'], failed: ['failed'], waiting: ['pending']
      }
      if (d && !expectedStatus[s.state]!.includes(d.status)) problems.push(`step ${s.position} ${s.state} with delivery ${d.status}`)
      if (d && s.state === 'done' && d.status === 'failed') {
        // resolved by hand: fine only when an advance said so
        if (!activities.some((a) => a.step_id === s.id && a.kind === 'stepDone')) problems.push(`step ${s.position} done with a failed delivery and no stepDone`)
      }
      if (d) {
        const ofIt = attempts.filter((a) => a.delivery_id === d.id)
        if (ofIt.length !== d.attempt_count && d.round === 1) problems.push(`delivery has ${ofIt.length} attempts, attempt_count ${d.attempt_count}`)
        const numbers = ofIt.map((a) => `${a.round}:${a.attempt_number}`)
        if (new Set(numbers).size !== numbers.length) problems.push(`attempt numbers repeat: ${numbers}`)
      }
    }
  }
  for (const s of steps) {
    const succeeded = activities.filter((a) => a.step_id === s.id && a.kind === 'webhookSucceeded').length
    const byService = activities.filter((a) => a.step_id === s.id && a.kind === 'stepDone' && a.data.by !== 'via the API').length
    if (succeeded !== byService) problems.push(`step ${s.position}: ${succeeded} webhookSucceeded, ${byService} done by the service`)
  }
  const cancelledActs = activities.filter((a) => a.kind === 'processCancelled').length
  if (cancelledActs !== (instance.status === 'cancelled' ? 1 : 0)) problems.push(`${cancelledActs} processCancelled activities for a ${instance.status} process`)
  const completedActs = activities.filter((a) => a.kind === 'processCompleted').length
  if (completedActs !== (instance.status === 'completed' ? 1 : 0)) problems.push(`${completedActs} processCompleted activities for a ${instance.status} process`)
  return { problems, instance, steps, activities, deliveries }
}

t.test('advance, advance with stepId, cancel and retry race the scheduler on a due webhook step', async (t) => {
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Race: hook' },
    { kind: 'task', name: 'Race: review' },
    { kind: 'task', name: 'Race: last' }
  ])
  const totals: Record<string, number> = {}
  const outcomes: Record<string, number> = {}
  for (let round = 0; round < 4; round++) {
    rt.provider.always({ status: 200, body: 'ok', delayMs: round % 3 === 0 ? 0 : 20 })
    const started = await rt.start(templateId, { propertyId: undefined })
    const [hook, review] = started.steps.map((s: { id: string }) => s.id)
    const path = `/v1/process-instances/${started.id}`
    const intents: [string, () => Promise<Answer>][] = [
      ...Array.from({ length: 8 }, () => ['advance skipped hook', () => call('POST', `${path}/advance`, { outcome: 'skipped', stepId: hook })] as [string, () => Promise<Answer>]),
      ...Array.from({ length: 4 }, () => ['advance skipped', () => call('POST', `${path}/advance`, { outcome: 'skipped' })] as [string, () => Promise<Answer>]),
      ...Array.from({ length: 4 }, () => ['advance done review', () => call('POST', `${path}/advance`, { outcome: 'done', stepId: review })] as [string, () => Promise<Answer>]),
      ...Array.from({ length: 3 }, () => ['cancel', () => call('POST', `${path}/cancel`, {})] as [string, () => Promise<Answer>]),
      ...Array.from({ length: 4 }, () => ['retry hook', () => call('POST', `${path}/steps/${hook}/retry`)] as [string, () => Promise<Answer>])
    ]
    const scheduled = jittered(() => rt.scheduler.runOnce())
    const answers = await Promise.all(shuffle(intents).map(async ([label, send]) => ({ label, ...(await jittered(send)) })))
    await scheduled
    await rt.scheduler.runOnce()
    for (const [k, v] of Object.entries(tally(answers))) totals[k] = (totals[k] ?? 0) + v
    for (const a of answers) if (a.status >= 500 || ![200, 409].includes(a.status)) t.fail(`${a.label} answered ${a.status}: ${JSON.stringify(a.data)}`)
    const { problems, instance, steps, activities } = await checkProcess(started.id)
    t.same(problems, [], `round ${round}`)
    const advanced = answers.filter((a) => a.label.startsWith('advance') && a.status === 200).length
    const endedByHand = activities.filter((a) => ['stepDone', 'stepSkipped'].includes(a.kind) && a.data.by === 'via the API').length
    t.equal(advanced, endedByHand, `round ${round}: one step ended per successful advance`)
    t.ok(answers.filter((a) => a.label === 'advance skipped hook' && a.status === 200).length <= 1)
    t.equal(answers.filter((a) => a.label === 'cancel' && a.status === 200).length, instance.status === 'cancelled' ? 1 : 0)
    t.equal(answers.filter((a) => a.label === 'retry hook' && a.status === 200).length, 0, 'a due step is never retried')
    const calls = rt.provider.calls.filter((c) => c.query.processId === started.id).length
    t.ok(calls <= 1, `round ${round}: ${calls} calls`)
    const key = `${instance.status} ${steps.map((s) => s.state).join(',')} calls=${calls}`
    outcomes[key] = (outcomes[key] ?? 0) + 1
    if (instance.status === 'running') await call('POST', `${path}/cancel`, {})
    rt.clock.advance(MINUTE)
  }
  t.comment(JSON.stringify(totals))
  t.comment(JSON.stringify(outcomes))
})

t.test('retry, advance done/skipped and cancel race two workers on a failed webhook step', async (t) => {
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Failed race: hook', deadlineDays: 1 },
    { kind: 'task', name: 'Failed race: review' }
  ])
  const other = rt.newScheduler()
  const totals: Record<string, number> = {}
  const outcomes: Record<string, number> = {}
  for (let round = 0; round < 4; round++) {
    const started = await rt.start(templateId, { propertyId: undefined })
    const [hook, review] = started.steps.map((s: { id: string }) => s.id)
    const path = `/v1/process-instances/${started.id}`
    rt.provider.always({ status: 404, body: 'no' })
    await rt.scheduler.runOnce()
    t.equal((await pgc.query('select state from instance_steps where id = $1', [hook])).rows[0].state, 'failed')
    rt.provider.always({ status: 200, body: 'ok', delayMs: round % 2 ? 10 : 0 })
    const intents: [string, () => Promise<Answer>][] = [
      ...Array.from({ length: 8 }, () => ['retry hook', () => call('POST', `${path}/steps/${hook}/retry`)] as [string, () => Promise<Answer>]),
      ...Array.from({ length: 5 }, () => ['advance done hook', () => call('POST', `${path}/advance`, { outcome: 'done', stepId: hook })] as [string, () => Promise<Answer>]),
      ...Array.from({ length: 5 }, () => ['advance skipped hook', () => call('POST', `${path}/advance`, { outcome: 'skipped', stepId: hook })] as [string, () => Promise<Answer>]),
      ...Array.from({ length: 4 }, () => ['advance done review', () => call('POST', `${path}/advance`, { outcome: 'done', stepId: review })] as [string, () => Promise<Answer>]),
      ...Array.from({ length: 3 }, () => ['cancel', () => call('POST', `${path}/cancel`, {})] as [string, () => Promise<Answer>])
    ]
    const workers = [jittered(() => rt.scheduler.runOnce()), jittered(() => other.runOnce()), jittered(() => rt.scheduler.runOnce())]
    const answers = await Promise.all(shuffle(intents).map(async ([label, send]) => ({ label, ...(await jittered(send)) })))
    await Promise.all(workers)
    await rt.scheduler.runOnce()
    for (const [k, v] of Object.entries(tally(answers))) totals[k] = (totals[k] ?? 0) + v
    for (const a of answers) if (![200, 409].includes(a.status)) t.fail(`${a.label} answered ${a.status}: ${JSON.stringify(a.data)}`)
    const { problems, instance, steps, activities, deliveries } = await checkProcess(started.id)
    t.same(problems, [], `round ${round}`)
    const advanced = answers.filter((a) => a.label.startsWith('advance') && a.status === 200).length
    t.equal(advanced, activities.filter((a) => ['stepDone', 'stepSkipped'].includes(a.kind) && a.data.by === 'via the API').length, `round ${round}: one step per advance`)
    t.ok(answers.filter((a) => a.label.endsWith('hook') && a.label.startsWith('advance') && a.status === 200).length <= 1)
    const retried = answers.filter((a) => a.label === 'retry hook' && a.status === 200).length
    t.ok(retried <= 1, `round ${round}: ${retried} retries`)
    t.equal(activities.filter((a) => a.kind === 'webhookRetried').length, retried)
    t.equal(deliveries[0].round, 1 + retried)
    const calls = rt.provider.calls.filter((c) => c.query.processId === started.id).length
    t.ok(calls <= 1 + retried, `round ${round}: ${calls} calls`)
    const key = `${instance.status} ${steps.map((s) => s.state).join(',')} retried=${retried} calls=${calls} delivery=${deliveries[0].status}`
    outcomes[key] = (outcomes[key] ?? 0) + 1
    if (instance.status === 'running') await call('POST', `${path}/cancel`, {})
    rt.clock.advance(MINUTE)
  }
  t.comment(JSON.stringify(totals))
  t.comment(JSON.stringify(outcomes))
})

t.test('concurrent starts with one Idempotency-Key: one process; the same body replays it, another body 422', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Keyed: one' }, { kind: 'task', name: 'Keyed: two' }])
  const other = (await rt.api.post('/v1/users', { name: 'Otto Other', email: 'otto@example.com' })).data
  const totals: Record<string, number> = {}
  for (let round = 0; round < 4; round++) {
    const key = { 'idempotency-key': `burst-${round}-${Math.random()}` }
    const bodyA = { templateId, responsibleUserId: rt.worker.id }
    const bodyB = { templateId, responsibleUserId: other.id }
    const mixed = round % 2 === 1
    for (const phase of ['fresh', 'again'] as const) {
      const intents = Array.from({ length: 30 }, (_, i) => (mixed && i % 2 ? ['B', bodyB] : ['A', bodyA]) as [string, object])
      const answers = await Promise.all(shuffle(intents).map(async ([label, body]) => ({ label, ...(await jittered(() => call('POST', '/v1/process-instances', body, key))) })))
      for (const [k, v] of Object.entries(tally(answers))) totals[`${phase} ${k}`] = (totals[`${phase} ${k}`] ?? 0) + v
      const rows = (await pgc.query('select id, responsible_user_id from process_instances where idempotency_key = $1', [key['idempotency-key']])).rows
      t.equal(rows.length, 1, `round ${round} ${phase}: one process for the key`)
      const winner = rows[0].responsible_user_id === rt.worker.id ? 'A' : 'B'
      const created = answers.filter((a) => a.status === 201)
      t.equal(created.length, phase === 'fresh' ? 1 : 0, `round ${round} ${phase}: ${JSON.stringify(tally(answers))}`)
      for (const a of answers) {
        if (a.label === winner) {
          t.ok([200, 201].includes(a.status), `${a.label}: ${a.status} ${JSON.stringify(a.data)}`)
          t.equal(a.data.id, rows[0].id)
          if (a.status === 200) t.equal(a.headers.get('idempotent-replayed'), 'true')
        } else {
          t.equal(a.status, 422, `${a.label} against ${winner}: ${a.status} ${JSON.stringify(a.data)}`)
        }
      }
      const orphans = (await pgc.query(`select count(*)::int as n from activities a where a.kind = 'processStarted'
        and a.tenant_id = $1 and not exists (select from process_instances p where p.id = a.instance_id)`, [rt.tenant.id])).rows[0].n
      t.equal(orphans, 0)
      const activities = (await pgc.query(`select kind, count(*)::int as n from activities where instance_id = $1 group by kind`, [rows[0].id])).rows
      t.same(activities.find((r) => r.kind === 'processStarted')?.n, 1)
      if (phase === 'fresh') {
        // finish it, so the second burst meets a completed process
        for (const outcome of ['done', 'done']) t.equal((await call('POST', `/v1/process-instances/${rows[0].id}/advance`, { outcome })).status, 200)
      }
    }
  }
  t.comment(JSON.stringify(totals))
})

t.test('PATCHes with the same If-Match from many clients: exactly one wins, the rest 412', async (t) => {
  const totals: Record<string, number> = {}
  for (let round = 0; round < 4; round++) {
    const templateId = await rt.template([{ kind: 'task', name: 'Match: one' }, { kind: 'task', name: 'Match: two' }])
    const template = (await call('GET', `/v1/process-templates/${templateId}`)).data
    const step = template.steps[0]
    const same = round % 2 === 0
    const patches = Array.from({ length: 25 }, (_, i) => ['template', () => call('PATCH', `/v1/process-templates/${templateId}`,
      { name: same ? 'Match: renamed' : `Match: renamed ${i}` }, { 'if-match': `"${template.version}"` })] as [string, () => Promise<Answer>])
    const stepPatches = Array.from({ length: 25 }, (_, i) => ['step', () => call('PATCH', `/v1/process-templates/${templateId}/steps/${step.id}`,
      { name: same ? 'Match: step renamed' : `Match: step ${i}` }, { 'if-match': `"${step.version}"` })] as [string, () => Promise<Answer>])
    const answers = await Promise.all(shuffle([...patches, ...stepPatches]).map(async ([label, send]) => ({ label, ...(await jittered(send)) })))
    for (const [k, v] of Object.entries(tally(answers))) totals[k] = (totals[k] ?? 0) + v
    // A step's edit moves its template's version on too: a template PATCH after it is stale as well.
    const templateWins = answers.filter((a) => a.label === 'template' && a.status === 200)
    const stepWins = answers.filter((a) => a.label === 'step' && a.status === 200)
    t.ok(templateWins.length <= 1, `round ${round}: ${JSON.stringify(tally(answers))}`)
    t.equal(stepWins.length, 1, `round ${round}: ${JSON.stringify(tally(answers))}`)
    t.equal(answers.filter((a) => a.status === 412).length, answers.length - templateWins.length - stepWins.length)
    const after = (await call('GET', `/v1/process-templates/${templateId}`)).data
    t.equal(after.name, templateWins[0]?.data.name ?? template.name)
    t.equal(after.steps[0].name, stepWins[0]!.data.name)
    t.equal(after.version, template.version + 1 + templateWins.length, 'the template moved on once per change')
    t.equal(after.steps[0].version, step.version + 1)
    for (const a of answers.filter((a) => a.status === 412)) {
      t.ok(Number(a.headers.get('etag')?.replaceAll('"', '')) > (a.label === 'step' ? step.version : template.version), 'a 412 names a newer version')
    }
  }
  t.comment(JSON.stringify(totals))
})

t.test('starts racing step edits, a reorder, an insert, a delete and a deactivation copy one consistent snapshot', async (t) => {
  const totals: Record<string, number> = {}
  let checked = 0
  for (let round = 0; round < 3; round++) {
    const templateId = await rt.template(['A', 'B', 'C'].map((name) => ({ kind: 'task', name })))
    const [a, b, c] = (await call('GET', `/v1/process-templates/${templateId}`)).data.steps.map((s: { id: string }) => s.id)
    const base = `/v1/process-templates/${templateId}`
    type Edit = { label: string; send: () => Promise<Answer>; apply: (state: string[]) => string[] | undefined }
    const edits: Edit[] = [
      { label: 'rename A', send: () => call('PATCH', `${base}/steps/${a}`, { name: 'A2' }), apply: (s) => s.map((n) => (n === 'A' ? 'A2' : n)) },
      { label: 'rename B', send: () => call('PATCH', `${base}/steps/${b}`, { name: 'B2' }), apply: (s) => s.map((n) => (n === 'B' ? 'B2' : n)) },
      { label: 'delete C', send: () => call('DELETE', `${base}/steps/${c}`), apply: (s) => s.filter((n) => n !== 'C') },
      { label: 'insert D', send: () => call('POST', `${base}/steps`, { kind: 'task', name: 'D', position: 1 }), apply: (s) => ['D', ...s] },
      {
        label: 'reorder',
        send: () => call('PUT', `${base}/steps/order`, { stepIds: [c, b, a] }),
        apply: (s) => (s.length === 3 && s.includes('C') && !s.includes('D') ? [s.find((n) => n === 'C')!, s.find((n) => n.startsWith('B'))!, s.find((n) => n.startsWith('A'))!] : undefined)
      }
    ]
    const starts = Array.from({ length: 20 }, () => ({ label: 'start', send: () => call('POST', '/v1/process-instances', { templateId, responsibleUserId: rt.worker.id }) }))
    const deactivate = round % 2 === 1
      ? [{ label: 'deactivate', send: () => call('PATCH', base, { active: false }) }]
      : []
    const all = shuffle([...edits, ...starts, ...deactivate])
    const answers = await Promise.all(all.map(async (e) => ({ label: e.label, ...(await jittered(e.send)) })))
    for (const [k, v] of Object.entries(tally(answers))) totals[k] = (totals[k] ?? 0) + v
    for (const x of answers) if (x.status >= 500) t.fail(`${x.label} ${x.status} ${JSON.stringify(x.data)}`)
    // Every state the template went through, in any order of the edits that succeeded.
    const applied = edits.filter((e) => answers.find((x) => x.label === e.label)!.status < 300)
    const states = new Set<string>()
    const walk = (state: string[], left: Edit[]) => {
      states.add(state.join(','))
      for (const e of left) {
        const next = e.apply(state)
        if (next) walk(next, left.filter((x) => x !== e))
      }
    }
    walk(['A', 'B', 'C'], applied)
    const final = (await call('GET', base)).data.steps.map((s: { name: string; position: number }) => s.name)
    t.ok(states.has(final.join(',')), `round ${round}: final ${final} reachable`)
    const processes = (await pgc.query('select id from process_instances where template_id = $1', [templateId])).rows
    t.equal(processes.length, answers.filter((x) => x.label === 'start' && x.status === 201).length)
    for (const p of processes) {
      const steps = (await pgc.query('select name, position from instance_steps where instance_id = $1 order by position', [p.id])).rows
      t.same(steps.map((s) => s.position), steps.map((_, i) => i + 1))
      t.ok(states.has(steps.map((s) => s.name).join(',')), `round ${round}: process copied ${steps.map((s) => s.name)} of ${[...states].join(' | ')}`)
      checked += 1
    }
    // A start whose write found the template changed three times in a row gives up with 409 (nothing started).
    for (const x of answers.filter((x) => x.label === 'start' && x.status !== 201)) {
      if (x.status === 409) t.match(x.data.detail, /kept changing/)
      else t.equal(x.status, 422, JSON.stringify(x.data))
    }
    for (const x of answers.filter((x) => x.label === 'start' && x.status === 201)) await call('POST', `/v1/process-instances/${x.data.id}/cancel`, {})
  }
  t.comment(`${checked} processes checked; ${JSON.stringify(totals)}`)
})

t.test('record PATCHes race write-backs with an apiClaim: no field update lost, triggers and activities once each', async (t) => {
  const trigger = await rt.operator.post(`/v1/marketplace-services/${rt.serviceId}/triggers`, { module: 'property', events: ['update'], fields: ['watched', 'marketValue'] })
  t.equal(trigger.statusCode, 201, trigger.body)
  t.teardown(() => rt.operator.delete(`/v1/marketplace-services/${rt.serviceId}/triggers/${trigger.data.id}`))
  const totals: Record<string, number> = {}
  for (let round = 0; round < 2; round++) {
    const property = (await call('POST', '/v1/properties', { maintainerUserId: rt.worker.id, fields: { price: 1 } })).data
    const path = `/v1/properties/${property.id}`
    t.equal((await call('PATCH', path, { fields: { watched: -1 } })).status, 200)
    rt.provider.always({ status: 200, body: 'ok' })
    await rt.scheduler.runOnce()
    const claimCall = rt.provider.calls.filter((c) => c.query.estateId === property.id).at(-1)
    t.ok(claimCall, 'the trigger called the provider')
    const claim = claimCall!.query.apiClaim!
    const before = (await call('GET', path)).data
    const intents: { label: string; fields: Record<string, unknown>; key?: string }[] = [
      ...Array.from({ length: 15 }, (_, i) => ({ label: 'own field', fields: { [`f${i}`]: i } })),
      ...Array.from({ length: 10 }, (_, i) => ({ label: 'watched', fields: { watched: i, [`w${i}`]: true } })),
      ...Array.from({ length: 10 }, (_, i) => ({ label: 'write-back', fields: { marketValue: 1000 + i, [`mv${i}`]: i }, key: claim }))
    ]
    const answers = await Promise.all(shuffle(intents).map(async (intent) => ({
      ...intent,
      ...(await jittered(() => fetch(`${origin}${path}`, {
        method: 'PATCH',
        headers: { authorization: `Bearer ${intent.key ?? rt.tenant.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ fields: intent.fields })
      }).then(async (r) => ({ status: r.status, data: await r.json() }))))
    })))
    for (const [k, v] of Object.entries(tally(answers))) totals[k] = (totals[k] ?? 0) + v
    for (const a of answers) t.equal(a.status, 200, `${a.label}: ${JSON.stringify(a.data)}`)
    const row = (await pgc.query('select fields, version from properties where id = $1', [property.id])).rows[0]
    for (const a of answers) {
      for (const [name, value] of Object.entries(a.fields)) {
        if (name === 'watched' || name === 'marketValue') continue
        t.same(row.fields[name], value, `round ${round}: ${name} kept`)
      }
      t.match(a.data.fields, a.fields, 'each answer shows its own write')
    }
    t.equal(row.version, before.version + answers.length, 'one version per write')
    t.same(new Set(answers.map((a) => a.data.version)).size, answers.length, 'every write answered a version of its own')
    const last = (name: string) => answers.filter((a) => name in a.fields).sort((x, y) => y.data.version - x.data.version)[0]!.fields[name]
    t.equal(row.fields.watched, last('watched'), 'the last write of a field wins')
    t.equal(row.fields.marketValue, last('marketValue'))
    const queued = (await pgc.query(`select changed_fields from deliveries where property_id = $1 and source = 'trigger' and created_at >= $2 and status <> 'succeeded'`,
      [property.id, rt.clock.now()])).rows
    t.equal(queued.length, 10, `round ${round}: one trigger call per change of watched, none for the write-backs`)
    for (const d of queued) t.same(d.changed_fields.includes('watched'), true)
    const writeBacks = (await pgc.query(`select count(*)::int as n from activities where property_id = $1 and kind = 'recordUpdatedByService'`, [property.id])).rows[0].n
    t.equal(writeBacks, 10, 'one activity per write-back')
    await rt.scheduler.runOnce()
    rt.clock.advance(MINUTE)
  }
  t.comment(JSON.stringify(totals))
})

t.test('a template delete racing starts: either it is deleted and nothing started, or 409 and every start stands', async (t) => {
  const totals: Record<string, number> = {}
  for (let round = 0; round < 4; round++) {
    const templateId = await rt.template([{ kind: 'task', name: 'Doomed: one' }])
    const intents = shuffle([
      ...Array.from({ length: 20 }, () => ({ label: 'start', send: () => call('POST', '/v1/process-instances', { templateId, responsibleUserId: rt.worker.id }) })),
      { label: 'delete', send: () => call('DELETE', `/v1/process-templates/${templateId}`) }
    ])
    const answers = await Promise.all(intents.map(async (i) => ({ label: i.label, ...(await jittered(i.send)) })))
    for (const [k, v] of Object.entries(tally(answers))) totals[k] = (totals[k] ?? 0) + v
    const deleted = answers.find((a) => a.label === 'delete')!
    const processes = (await pgc.query('select count(*)::int as n from process_instances where template_id = $1', [templateId])).rows[0].n
    const started = answers.filter((a) => a.label === 'start' && a.status === 201).length
    t.equal(processes, started, `round ${round}: ${JSON.stringify(tally(answers))}`)
    if (deleted.status === 204) {
      t.equal(started, 0)
      for (const a of answers.filter((a) => a.label === 'start')) t.equal(a.status, 422, JSON.stringify(a.data))
    } else {
      t.equal(deleted.status, 409, JSON.stringify(deleted.data))
      t.ok(started > 0)
    }
  }
  t.comment(JSON.stringify(totals))
})

t.test('concurrent record creates with one Idempotency-Key: one record; another body 422', async (t) => {
  const totals: Record<string, number> = {}
  for (let round = 0; round < 4; round++) {
    const key = { 'idempotency-key': `record-${round}-${Math.random()}` }
    const bodies = { A: { fields: { city: 'Aachen', n: round } }, B: { maintainerUserId: rt.worker.id, fields: { city: 'Bonn' } } }
    const intents = shuffle(Array.from({ length: 30 }, (_, i) => (round % 2 && i % 2 ? 'B' : 'A') as 'A' | 'B'))
    const answers = await Promise.all(intents.map(async (label) => ({ label, ...(await jittered(() => call('POST', '/v1/properties', bodies[label], key))) })))
    for (const [k, v] of Object.entries(tally(answers))) totals[k] = (totals[k] ?? 0) + v
    const rows = (await pgc.query('select id, fields from properties where idempotency_key = $1', [key['idempotency-key']])).rows
    t.equal(rows.length, 1)
    const winner = rows[0].fields.city === 'Aachen' ? 'A' : 'B'
    t.equal(answers.filter((a) => a.status === 201).length, 1, JSON.stringify(tally(answers)))
    for (const a of answers) {
      if (a.label === winner) t.equal(a.data.id, rows[0].id)
      else t.equal(a.status, 422, JSON.stringify(a.data))
    }
  }
  t.comment(JSON.stringify(totals))
})

t.test('while the call is in flight every advance, cancel and retry answers 409; the call then ends the step once', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Flight: hook' }, { kind: 'task', name: 'Flight: next' }])
  const totals: Record<string, number> = {}
  for (let round = 0; round < 3; round++) {
    let release!: () => void
    const held = new Promise<void>((resolve) => { release = resolve })
    let reached!: () => void
    const inFlight = new Promise<void>((resolve) => { reached = resolve })
    rt.provider.always(async () => { reached(); await held; return { status: round % 2 ? 200 : 404, body: 'x' } })
    const started = await rt.start(templateId, { propertyId: undefined })
    const [hook, next] = started.steps.map((s: { id: string }) => s.id)
    const path = `/v1/process-instances/${started.id}`
    const running = rt.scheduler.runOnce()
    await inFlight
    const intents = shuffle([
      ...Array.from({ length: 10 }, () => ({ label: 'advance skipped hook', send: () => call('POST', `${path}/advance`, { outcome: 'skipped', stepId: hook }) })),
      ...Array.from({ length: 5 }, () => ({ label: 'advance done hook', send: () => call('POST', `${path}/advance`, { outcome: 'done', stepId: hook }) })),
      ...Array.from({ length: 5 }, () => ({ label: 'advance next', send: () => call('POST', `${path}/advance`, { outcome: 'done', stepId: next }) })),
      ...Array.from({ length: 5 }, () => ({ label: 'cancel', send: () => call('POST', `${path}/cancel`, {}) })),
      ...Array.from({ length: 5 }, () => ({ label: 'retry', send: () => call('POST', `${path}/steps/${hook}/retry`) }))
    ])
    const answers = await Promise.all(intents.map(async (i) => ({ label: i.label, ...(await jittered(i.send)) })))
    for (const [k, v] of Object.entries(tally(answers))) totals[k] = (totals[k] ?? 0) + v
    for (const a of answers) t.equal(a.status, 409, `${a.label}: ${JSON.stringify(a.data)}`)
    release()
    await running
    const { problems, steps } = await checkProcess(started.id)
    t.same(problems, [])
    t.same(steps.map((s) => s.state), round % 2 ? ['done', 'due'] : ['failed', 'pending'])
    await call('POST', `${path}/cancel`, {})
  }
  rt.provider.always({ status: 200, body: 'ok' })
  t.comment(JSON.stringify(totals))
})
