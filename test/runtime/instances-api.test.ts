import { randomBytes, randomUUID } from 'node:crypto'
import pg from 'pg'
import t, { type Test } from 'tap'
import type { Database } from '../../src/db/database.js'
import { Kysely, PostgresDialect, sql } from '../../src/db/kysely.js'
import { TRIGGERS_NOTIFY } from '../../src/db/wakeups.js'
import { conflict, unprocessable } from '../../src/errors.js'
import { getInstance, startFailure, startInstance } from '../../src/modules/instances/service.js'
import { claimDeliveries } from '../../src/scheduler/claim-deliveries.js'
import type { Response } from '../helpers/app.js'
import { assertIsolated, assertProblem } from '../helpers/assertions.js'
import { DAY, MINUTE } from '../helpers/clock.js'
import { setupRuntime, type InstanceView, type RuntimeContext, type StepInput } from '../helpers/runtime.js'

// The process-instances API against one runtime (real Postgres, provider and SMTP server), shared by
// the subtests to keep the file fast: each subtest builds its own templates, filters lists by them,
// and cancels what it left running, so no subtest sees another's work.

const rt = await setupRuntime(t)
const base = '/v1/process-instances'

/** Kysely on a connection of its own that writes down each statement it runs. */
function loggingDb(t: Test): { db: Kysely<Database>; statements: string[] } {
  const statements: string[] = []
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: rt.databaseUrl, max: 1 }) }),
    log: (event) => { statements.push(event.query.sql.trim()) }
  })
  t.teardown(() => db.destroy())
  return { db, statements }
}

t.afterEach(async () => {
  rt.provider.always({ status: 200, body: 'ok' })
  await cancelRunning(rt)
})

t.test('start validation answers 422 with pointers, a malformed body 400', async (t) => {
  const propertyTemplate = await rt.template([{ kind: 'task', name: 'Check the land register', refersTo: { property: true } }])

  const copy = await rt.api.post(`/v1/process-templates/${propertyTemplate}/copy`, {})
  t.equal(copy.statusCode, 201, copy.body)
  t.equal(copy.data.active, false, 'a copy starts inactive')
  const inactive = await startRaw({ templateId: copy.data.id, propertyId: rt.propertyId })
  assertProblem(t, inactive, 422, /not active/)
  t.same(pointers(inactive), ['/body/templateId'])

  const unknownTemplate = await startRaw({ templateId: randomUUID() })
  assertProblem(t, unknownTemplate, 422)
  t.same(unknownTemplate.data.errors, [{ pointer: '/body/templateId', detail: 'no such process template' }])

  const unknownUser = await startRaw({ templateId: propertyTemplate, propertyId: rt.propertyId, responsibleUserId: randomUUID() })
  assertProblem(t, unknownUser, 422)
  t.same(unknownUser.data.errors, [{ pointer: '/body/responsibleUserId', detail: 'no such user' }])

  const noProperty = await startRaw({ templateId: propertyTemplate })
  assertProblem(t, noProperty, 422, /"Check the land register" refers to the property/)
  t.same(pointers(noProperty), ['/body/propertyId'])
  const bothTemplate = await rt.template([
    { kind: 'task', name: 'Visit the flat', refersTo: { property: true } },
    { kind: 'task', name: 'Write to the tenant', refersTo: { address: true } },
    { kind: 'task', name: 'Hand over the keys', refersTo: { property: true, address: true } }
  ])
  const noAddress = await startRaw({ templateId: bothTemplate, propertyId: rt.propertyId })
  assertProblem(t, noAddress, 422, /steps "Write to the tenant", "Hand over the keys" refer to the address/)
  t.same(pointers(noAddress), ['/body/addressId'], 'the same for an address')
  t.same(pointers(await startRaw({ templateId: bothTemplate })), ['/body/propertyId', '/body/addressId'], 'each record missing has its pointer')

  // Another tenant's property reads exactly like one that does not exist.
  const other = await rt.newTenant()
  const otherUser = (await other.client.post('/v1/users', { name: 'Olga Other', email: 'olga@example.com' })).data
  const foreign = (await other.client.post('/v1/properties', { maintainerUserId: otherUser.id, fields: { price: 1 } })).data
  const foreignStart = await startRaw({ templateId: propertyTemplate, propertyId: foreign.id })
  const missingStart = await startRaw({ templateId: propertyTemplate, propertyId: randomUUID() })
  assertProblem(t, foreignStart, 422)
  t.same(foreignStart.data.errors, [{ pointer: '/body/propertyId', detail: 'no such property' }])
  t.same(foreignStart.data.errors, missingStart.data.errors, 'no hint that the id exists elsewhere')
  t.notMatch(foreignStart.body, /Olga|Tenant \d/)

  // A service in use by a template cannot be deactivated by the tenant (409, that guard is tested with
  // the marketplace); the operator switching the service off makes the template unstartable.
  const hookTemplate = await rt.template([{ kind: 'webhook', name: 'Order a valuation' }])
  assertProblem(t, await rt.api.delete(`/v1/marketplace-services/${rt.serviceId}/activation`), 409)
  const off = await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { active: false })
  t.equal(off.statusCode, 200, off.body)
  try {
    const inactiveService = await startRaw({ templateId: hookTemplate })
    assertProblem(t, inactiveService, 422, /"Order a valuation" calls a marketplace service that is inactive or not activated/)
    t.same(pointers(inactiveService), ['/body/templateId'])
  } finally {
    t.equal((await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { active: true })).statusCode, 200)
  }

  const malformed = [
    await startRaw({ templateId: 'not-a-uuid' }),
    await startRaw({ templateId: propertyTemplate, colour: 'blue' }),
    await rt.api.post(base, { templateId: propertyTemplate }),
    await rt.api.post(base, '{"templateId":', { 'content-type': 'application/json' })
  ]
  for (const response of malformed) assertProblem(t, response, 400)
  t.same(pointers(malformed[0]!), ['/body/templateId'])
  t.same(pointers(malformed[1]!), ['/body/colour'])
  t.same(pointers(malformed[2]!), ['/body/responsibleUserId'])
  const listed = await rt.api.get(`${base}?templateId=${propertyTemplate}`)
  t.same(listed.data.items, [], 'no refused start left a process behind')
})

t.test('a record given as null is a record not linked, as a process shows it (generated clients send null for an absent field)', async (t) => {
  const plain = await rt.template([{ kind: 'task', name: 'Plain task' }])
  for (const attempt of ['first', 'from a template started before']) {
    const started = await startRaw({ templateId: plain, propertyId: null, addressId: null })
    t.equal(started.statusCode, 201, `${attempt}: ${started.body}`)
    t.match(started.data, { propertyId: null, addressId: null, status: 'running' })
  }
  const linked = await startRaw({ templateId: plain, propertyId: rt.propertyId, addressId: null })
  t.equal(linked.statusCode, 201, linked.body)
  t.match(linked.data, { propertyId: rt.propertyId, addressId: null })

  const needsProperty = await rt.template([{ kind: 'task', name: 'Measure the rooms', refersTo: { property: true } }])
  const refused = await startRaw({ templateId: needsProperty, propertyId: null })
  assertProblem(t, refused, 422, /"Measure the rooms" refers to the property/)
  t.same(pointers(refused), ['/body/propertyId'])

  const key = { 'idempotency-key': `null-${randomUUID()}` }
  const first = await rt.api.post(base, { templateId: plain, responsibleUserId: rt.worker.id, propertyId: null }, key)
  t.equal(first.statusCode, 201, first.body)
  const replay = await rt.api.post(base, { templateId: plain, responsibleUserId: rt.worker.id }, key)
  t.equal(replay.statusCode, 200, 'null and absent are the same start')
  t.equal(replay.data.id, first.data.id)

  assertProblem(t, await startRaw({ templateId: plain, propertyId: '' }), 400)
  assertProblem(t, await startRaw({ templateId: null }), 400, /\/body\/templateId/)
})

t.test('Idempotency-Key: a replay answers 200 with the first process, a different body 422', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Idempotent task' }])
  const body = { templateId, responsibleUserId: rt.worker.id }
  const key = { 'idempotency-key': `start-${randomUUID()}` }

  const first = await rt.api.post(base, body, key)
  t.equal(first.statusCode, 201, first.body)
  t.notOk(first.headers['idempotent-replayed'])
  const second = await rt.api.post(base, body, key)
  t.equal(second.statusCode, 200, second.body)
  t.equal(second.headers['idempotent-replayed'], 'true')
  t.equal(second.data.id, first.data.id)
  t.same(listedIds(await rt.api.get(`${base}?templateId=${templateId}`)), [first.data.id], 'one process started')

  const different = await rt.api.post(base, { ...body, responsibleUserId: rt.controller.id }, key)
  assertProblem(t, different, 422, /Idempotency-Key was used for a different start/)

  const concurrentKey = { 'idempotency-key': `race-${randomUUID()}` }
  const raced = await Promise.all([rt.api.post(base, body, concurrentKey), rt.api.post(base, body, concurrentKey)])
  t.same(raced.map((r) => r.statusCode).sort(), [200, 201], raced.map((r) => r.body).join('\n'))
  t.equal(raced[0].data.id, raced[1].data.id, 'both answers name the same process')
  const all = listedIds(await rt.api.get(`${base}?templateId=${templateId}`))
  t.same(all, [raced[0].data.id, first.data.id], 'the race started exactly one more process')
})

t.test('an Idempotency-Key is the tenant\'s own: another tenant\'s start with it starts its own process and learns nothing', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Keyed task' }])
  const key = { 'idempotency-key': `shared-${randomUUID()}` }
  const ours = await rt.api.post(base, { templateId, responsibleUserId: rt.worker.id }, key)
  t.equal(ours.statusCode, 201, ours.body)

  const stranger = await rt.newTenant({ name: 'Andere Immobilien' })
  const user = (await stranger.client.post('/v1/users', { name: 'Otto Other', email: 'otto@example.com' })).data
  const template = (await stranger.client.post('/v1/process-templates', { name: 'Their process' })).data
  await stranger.client.post(`/v1/process-templates/${template.id}/steps`, { kind: 'task', name: 'Their task' })
  t.equal((await stranger.client.patch(`/v1/process-templates/${template.id}`, { active: true })).statusCode, 200)
  const theirs = await stranger.client.post(base, { templateId: template.id, responsibleUserId: user.id }, key)
  t.equal(theirs.statusCode, 201, 'a start of its own, not a 422 naming the first tenant\'s process')
  t.notOk(theirs.headers['idempotent-replayed'])
  t.not(theirs.data.id, ours.data.id)
  t.notOk(theirs.body.includes(ours.data.id), 'no id of the other tenant\'s process in the answer')
  // The same body as the first tenant's: its template and user are not the stranger's, so 422, never a replay.
  const same = await stranger.client.post(base, { templateId, responsibleUserId: rt.worker.id }, key)
  t.ok(same.statusCode >= 400, `${same.statusCode}`)
  t.notOk(same.body.includes(ours.data.id), 'no replay of the other tenant\'s process')
  t.same(listedIds(await rt.api.get(`${base}?templateId=${templateId}`)), [ours.data.id], 'the first tenant still has its one process')
})

t.test('a start reads, then writes the whole process in one statement, outside any transaction', async (t) => {
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Order a valuation', refersTo: { property: true } },
    { kind: 'task', name: 'Call the owner', deadlineDays: 2 }
  ])
  const { db: logged, statements } = loggingDb(t)
  const { instance, created } = await startInstance(logged, rt.clock, TRIGGERS_NOTIFY, rt.tenant.id, { templateId, responsibleUserId: rt.worker.id, propertyId: rt.propertyId })
  t.ok(created)
  t.equal(statements.length, 2, statements.join('\n---\n'))
  t.match(statements[0], /^select to_jsonb\(t\) as template/, 'first what the start checks and copies')
  t.match(statements[1], /^with\s+inserted as \(\s*insert into process_instances/, 'then one statement that writes')
  t.notOk(statements.some((s) => /^(begin|start transaction|commit|rollback)/i.test(s)), 'no transaction around them')
  t.notMatch(statements[1], /\bupdate\b/, 'the write holds only its inserts: the parts with nothing to change are left out')

  const read = await rt.instance(instance.id)
  t.same(instance, read, 'the answer, built from what the statement returned, is the process as it reads')
  t.same(states(read), ['due', 'pending'])
  t.equal(read.currentStep.id, read.steps[0].id)
  t.equal(read.steps[0].assigneeUserId, rt.worker.id)
  t.match(read.steps[0].delivery, { status: 'pending', round: 1, attempts: 0 }, 'the first step queued its call')
  const kinds = (await rt.api.get(`${base}/${instance.id}/activities`)).data.items.map((a: { kind: string }) => a.kind)
  t.same(kinds.sort(), ['processStarted', 'stepStarted'])

  // Starts racing for one Idempotency-Key: one process, and the others wrote nothing of theirs.
  const key = { 'idempotency-key': `one-statement-${randomUUID()}` }
  const body = { templateId, responsibleUserId: rt.worker.id, propertyId: rt.propertyId }
  const raced = await Promise.all(Array.from({ length: 4 }, () => rt.api.post(base, body, key)))
  t.same(raced.map((r) => r.statusCode).sort(), [200, 200, 200, 201], raced.map((r) => r.body).join('\n'))
  t.equal(new Set(raced.map((r) => r.data.id)).size, 1, 'every answer names the same process')
  const { rows } = await sql<{ orphans: number }>`
    select count(*)::int as orphans from activities a
    where a.tenant_id = ${rt.tenant.id} and a.instance_id is not null
      and not exists (select from process_instances p where p.tenant_id = a.tenant_id and p.id = a.instance_id)
  `.execute(rt.db)
  t.equal(rows[0]?.orphans, 0, 'no activity of a start that lost the race')
})

t.test('a start from a template started before is one statement, which checks again what it did not read', async (t) => {
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Order a valuation', refersTo: { property: true } },
    { kind: 'task', name: 'Call the owner', deadlineDays: 2 }
  ])
  const { db: logged, statements } = loggingDb(t)
  const input = { templateId, responsibleUserId: rt.worker.id, propertyId: rt.propertyId }
  const start = async (body: Record<string, unknown> = input) => {
    statements.length = 0
    try {
      return await startInstance(logged, rt.clock, TRIGGERS_NOTIFY, rt.tenant.id, body as typeof input)
    } finally {
      // Kysely logs a statement once it has run, whether it succeeded or failed.
      await new Promise((resolve) => setImmediate(resolve))
    }
  }
  const refusal = (started: Promise<unknown>) => started.then(() => undefined, (error: unknown) => error)
  const reads = () => statements.filter((s) => /^select to_jsonb\(t\) as template/.test(s)).length
  const writes = () => statements.filter((s) => /^with\s+inserted as/.test(s)).length

  await start()
  t.same([reads(), writes()], [1, 1], 'the first start reads the template\'s facts')
  const { instance } = await start()
  t.same([reads(), writes()], [0, 1], 'the next one only writes')
  t.match(statements[0], /t\.version = \$\d+ and tn\.time_zone = \$\d+/, 'checking the template\'s version and the tenant\'s time zone')
  t.match(statements[0], /service_activations/, 'and the services its steps call')
  const read = await rt.instance(instance.id)
  t.same(instance, read, 'the answer is the process as it reads')
  t.same(states(read), ['due', 'pending'])
  t.match(read.steps[0].delivery, { status: 'pending', round: 1, attempts: 0 })

  // The template changes: the write inserts nothing, and the start reads the new facts.
  const { version } = (await rt.api.get(`/v1/process-templates/${templateId}`)).data
  const renamed = await rt.api.patch(`/v1/process-templates/${templateId}`, { name: 'Valuation, renamed' }, { 'if-match': `"${version}"` })
  t.equal(renamed.statusCode, 200, renamed.body)
  const afterRename = await start()
  t.same([writes(), reads()], [2, 1], 'a write that inserted nothing, the read, the write')
  t.equal(afterRename.instance.templateName, 'Valuation, renamed')
  t.equal((await rt.api.get(`${base}?templateId=${templateId}`)).data.items.length, 3, 'one process per start, none from the write that found the facts changed')

  // A step changes (its version moves on, and the template's with it): the start copies the step as it is now.
  const stepId = (await rt.api.get(`/v1/process-templates/${templateId}`)).data.steps[1].id
  const edited = await rt.api.patch(`/v1/process-templates/${templateId}/steps/${stepId}`, { name: 'Call the owner today', deadlineDays: 1 })
  t.equal(edited.statusCode, 200, edited.body)
  t.equal((await rt.api.get(`/v1/process-templates/${templateId}`)).data.version, version + 2, 'the template\'s version moved with its step')
  const afterEdit = await start()
  t.same([writes(), reads()], [2, 1], 'the write found a step changed')
  t.match(afterEdit.instance.steps[1], { name: 'Call the owner today', deadlineDays: 1 })

  // The service is switched off: the same 422 as a start that read it.
  t.equal((await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { active: false })).statusCode, 200)
  try {
    t.match(await refusal(start()), { status: 422, detail: /"Order a valuation" calls a marketplace service that is inactive or not activated/ })
    t.same([writes(), reads()], [1, 1])
  } finally {
    t.equal((await rt.operator.patch(`/v1/marketplace-services/${rt.serviceId}`, { active: true })).statusCode, 200)
  }
  await start()
  await start()
  t.same([reads(), writes()], [0, 1], 'known again')

  // A user or property that does not exist fails the write's foreign key: the start reads and answers as ever.
  t.match(await refusal(start({ ...input, responsibleUserId: randomUUID() })), { status: 422, errors: [{ pointer: '/body/responsibleUserId', detail: 'no such user' }] })
  t.same([writes(), reads()], [1, 1])
  t.match(await refusal(start({ ...input, propertyId: randomUUID() })), { status: 422, errors: [{ pointer: '/body/propertyId', detail: 'no such property' }] })
  // A start the known facts refuse goes the usual way, for every reason at once.
  const { propertyId: _, ...noProperty } = input
  t.match(await refusal(start({ ...noProperty, responsibleUserId: randomUUID() })), { status: 422, errors: [
    { pointer: '/body/responsibleUserId', detail: 'no such user' },
    { pointer: '/body/propertyId', detail: 'required: step "Order a valuation" refers to the property' }
  ] })
  t.same([writes(), reads()], [0, 1])

  // A template whose step holds a free target's secret is read on every start: re-encrypting the
  // secrets changes no version.
  const secretTemplate = await rt.template([{ kind: 'webhook', name: 'Tell our CRM', target: { url: 'http://127.0.0.1:9/hook', secret: `whsec_${randomBytes(32).toString('base64')}` } }])
  await start({ templateId: secretTemplate, responsibleUserId: rt.worker.id })
  await start({ templateId: secretTemplate, responsibleUserId: rt.worker.id })
  t.same([reads(), writes()], [1, 1], 'its facts are not kept')

  // The tenant's time zone changes: deadlines are counted in the new one.
  await start()
  const zone = (await rt.operator.get(`/v1/tenants/${rt.tenant.id}`)).data.timeZone
  t.equal((await rt.operator.patch(`/v1/tenants/${rt.tenant.id}`, { timeZone: 'Pacific/Auckland' })).statusCode, 200)
  try {
    await start()
    t.same([writes(), reads()], [2, 1], 'the write found the time zone changed')
  } finally {
    t.equal((await rt.operator.patch(`/v1/tenants/${rt.tenant.id}`, { timeZone: zone })).statusCode, 200)
  }
})

t.test('a start whose user or record is deleted between its read and its write answers 422 with a pointer, as a start after the deletion does', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Call the owner', refersTo: { property: true } }])
  const cases = [
    { table: 'users', pointer: '/body/responsibleUserId', detail: 'no such user' },
    { table: 'properties', pointer: '/body/propertyId', detail: 'no such property' }
  ] as const
  for (const { table, pointer, detail } of cases) {
    const user = (await rt.api.post('/v1/users', { name: 'Temp', email: `temp-${randomUUID()}@example.com` })).data
    const property = (await rt.api.post('/v1/properties', { fields: {} })).data
    const doomed = table === 'users' ? user.id : property.id
    for (const key of [{ 'idempotency-key': `doomed-${randomUUID()}` }, undefined]) {
      // Another transaction holds the row, then deletes it: the start has read it and waits in its write.
      const { release, done, deleted } = holdThenDelete(table, doomed)
      await deleted
      const starting = rt.api.post(base, { templateId, responsibleUserId: user.id, propertyId: property.id }, key)
      t.ok(await sessionWaitsForALock(), 'the start waits for the row in its write')
      release()
      await done
      assertProblem(t, await starting, 422, new RegExp(detail))
      t.match((await starting).data.errors, [{ pointer, detail }], `${table}, ${key ? 'with' : 'without'} an Idempotency-Key`)
      // The next case needs the row again.
      if (table === 'users') await rt.db.insertInto('users').values({ tenant_id: rt.tenant.id, id: doomed, name: 'Temp', email: `temp-${randomUUID()}@example.com` }).execute()
      else await rt.db.insertInto('properties').values({ tenant_id: rt.tenant.id, id: doomed, fields: '{}' }).execute()
    }
  }
})

t.test('a start whose template changes between its read and its write starts from the template as it is then', async (t) => {
  for (const withKey of [true, false]) {
    const key = () => (withKey ? { 'idempotency-key': `changed-${randomUUID()}` } : undefined)
    const label = withKey ? 'with an Idempotency-Key' : 'from a template not started before'
    // Deactivated in between: the start is refused as a start after the deactivation is.
    const deactivated = await rt.template([{ kind: 'task', name: 'Call the owner' }])
    const refused = await startWhileBlocked(t, { templateId: deactivated, responsibleUserId: rt.worker.id }, key(), async () => {
      const { version } = (await rt.api.get(`/v1/process-templates/${deactivated}`)).data
      const patched = await rt.api.patch(`/v1/process-templates/${deactivated}`, { active: false }, { 'if-match': `"${version}"` })
      t.equal(patched.statusCode, 200, patched.body)
    })
    assertProblem(t, refused, 422, /not active/)
    t.equal((await rt.api.get(`${base}?templateId=${deactivated}`)).data.items.length, 0, `${label}: no process from the inactive template`)

    // A step edited in between: the process copies the step as it is now.
    const edited = await rt.template([{ kind: 'task', name: 'Call the owner' }])
    const stepId = (await rt.api.get(`/v1/process-templates/${edited}`)).data.steps[0].id
    const started = await startWhileBlocked(t, { templateId: edited, responsibleUserId: rt.worker.id }, key(), async () => {
      const patched = await rt.api.patch(`/v1/process-templates/${edited}/steps/${stepId}`, { name: 'Call the owner today' })
      t.equal(patched.statusCode, 200, patched.body)
    })
    t.equal(started.statusCode, 201, started.body)
    t.equal(started.data.steps[0].name, 'Call the owner today', `${label}: the step as edited`)
  }
})

t.test('a start without a request that could not happen is told why, its 409 too (a template that kept changing)', async (t) => {
  t.equal(startFailure(unprocessable('Template "Sale" is not active.')), 'Template "Sale" is not active.')
  t.equal(startFailure(conflict('The template kept changing while the process was starting; retry it.')),
    'The template kept changing while the process was starting; retry it.', 'a follow-up step fails into a manual one saying so')
  t.throws(() => startFailure(new Error('connection lost')), { message: 'connection lost' }, 'anything else is thrown')
})

/**
 * Starts a process while another transaction holds process_instances locked against writes: the start
 * reads its facts, then waits in its write; `meanwhile` runs, then the lock goes.
 */
async function startWhileBlocked(t: Test, body: Record<string, unknown>, headers: Record<string, string> | undefined, meanwhile: () => Promise<void>) {
  let release!: () => void
  let locked!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  const holding = new Promise<void>((resolve) => { locked = resolve })
  const done = rt.db.transaction().execute(async (trx) => {
    await sql`lock table process_instances in share mode`.execute(trx)
    locked()
    await released
  })
  await holding
  const starting = rt.api.post(base, body, headers)
  try {
    t.ok(await sessionWaitsForALock(), 'the start waits in its write')
    await meanwhile()
  } finally {
    release()
    await done
  }
  return starting
}

/** A transaction that locks the tenant's row of `table` and, when `release` is called, deletes it and commits. */
function holdThenDelete(table: 'users' | 'properties', id: string) {
  let release!: () => void
  let locked!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  const deleted = new Promise<void>((resolve) => { locked = resolve })
  const done = rt.db.transaction().execute(async (trx) => {
    await sql`select id from ${sql.table(table)} where tenant_id = ${rt.tenant.id} and id = ${id} for update`.execute(trx)
    locked()
    await released
    await sql`delete from ${sql.table(table)} where tenant_id = ${rt.tenant.id} and id = ${id}`.execute(trx)
  })
  return { release, done, deleted }
}

async function sessionWaitsForALock(): Promise<boolean> {
  for (let i = 0; i < 100; i += 1) {
    const { rows } = await sql<{ waiting: number }>`
      select count(*)::int as waiting from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`.execute(rt.db)
    if ((rows[0]?.waiting ?? 0) > 0) return true
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return false
}

t.test('a read is one statement: the process, its steps in order and each step\'s latest delivery', async (t) => {
  // Every kind whose settings the API shows, so that a column the read left out would show.
  const sale = await rt.template([{ kind: 'task', name: 'Sell' }])
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Order a valuation', refersTo: { property: true } },
    { kind: 'task', name: 'Call the owner', deadlineDays: 2, start: { mode: 'daysAfterPrevious', days: 1 } },
    { kind: 'decision', name: 'Does the owner sell?', decision: { mode: 'manual', yes: 4, no: 5 } },
    { kind: 'email', name: 'Tell the controller', email: { mode: 'automatic', to: 'controller', subject: 'Sold: {{process.id}}', body: 'Sold.' } },
    { kind: 'followUpProcess', name: 'Start the sale', followUp: { templateId: sale, waitForCompletion: true } }
  ])
  const started = await rt.api.post(base, { templateId, responsibleUserId: rt.worker.id, propertyId: rt.propertyId })
  t.equal(started.statusCode, 201, started.body)
  const { db: logged, statements } = loggingDb(t)

  const read: InstanceView = await getInstance(logged, rt.tenant.id, started.data.id)
  t.equal(statements.length, 1, statements.join('\n---\n'))
  // strictSame: a field the read no longer selected would come back undefined, not null.
  t.strictSame(read, started.data, 'the process as its start answered it, built from every column it wrote')
  t.same(read.steps.map((s: InstanceView) => s.position), [1, 2, 3, 4, 5], 'the steps in order')
  t.match(read.steps[0].delivery, { status: 'pending', round: 1, attempts: 0 }, 'the webhook step with its delivery')
  t.same(read.steps.slice(1).map((s: InstanceView) => s.delivery), [null, null, null, null], 'the others without one')
  t.match(read.steps[2].decision, { mode: 'manual', yes: 4, no: 5, chosen: null })
  t.match(read.steps[3].email, { mode: 'automatic', to: 'controller' })
  t.match(read.steps[4].followUp, { templateId: sale, waitForCompletion: true })
  t.strictSame((await rt.api.get(`${base}/${started.data.id}`)).data, read, 'and as the API answers it')

  statements.length = 0
  const status = (read: Promise<unknown>) => read.then(() => 200, (error: { status?: number }) => error.status)
  t.equal(await status(getInstance(logged, rt.tenant.id, randomUUID())), 404, 'no such process: 404')
  t.equal(await status(getInstance(logged, randomUUID(), started.data.id)), 404, 'under another tenant: 404')
  t.equal(statements.length, 2, 'one statement each')

  // A process without steps (the API starts none, but the read does not rely on that): one row, no steps.
  const bare = randomUUID()
  await sql`insert into process_instances (tenant_id, id, template_id, template_name, status, responsible_user_id, controller_user_id, current_position, started_at, updated_at)
    select tenant_id, ${bare}, template_id, template_name, 'running', responsible_user_id, controller_user_id, 1, started_at, updated_at
    from process_instances where tenant_id = ${rt.tenant.id} and id = ${started.data.id}`.execute(rt.db)
  t.match(await getInstance(logged, rt.tenant.id, bare), { id: bare, status: 'running', currentStep: null, steps: [] })
  await sql`delete from process_instances where tenant_id = ${rt.tenant.id} and id = ${bare}`.execute(rt.db)
})

t.test('get one with its steps; list filters and cursor pagination', async (t) => {
  const property = await newProperty()
  const hookFirst = await rt.template([
    { kind: 'webhook', name: 'Order valuation', responsibility: 'propertyMaintainer', refersTo: { property: true }, deadlineDays: 2 },
    { kind: 'task', name: 'Review valuation', responsibility: { user: rt.controller.id } }
  ])
  const waitFirst = await rt.template([{ kind: 'task', name: 'Follow up later', start: { mode: 'daysAfterPrevious', days: 2 } }])
  const controllerTask = await rt.template([{ kind: 'task', name: 'Controller task', responsibility: { user: rt.controller.id } }])

  const now = rt.clock.now()
  const a = await rt.start(hookFirst, { propertyId: property })
  const b = await rt.start(waitFirst, { propertyId: undefined })
  const c = await rt.start(hookFirst, { propertyId: property })
  const d = await rt.start(controllerTask, { propertyId: undefined })
  t.equal((await rt.api.post(`${base}/${c.id}/cancel`, {})).statusCode, 200)

  const got = await rt.api.get(`${base}/${a.id}`)
  t.equal(got.statusCode, 200)
  t.equal(got.headers.etag, `"${got.data.version}"`)
  t.match(got.data, {
    id: a.id, templateId: hookFirst, status: 'running', responsibleUserId: rt.worker.id, controllerUserId: rt.controller.id,
    propertyId: property, addressId: null, endedAt: null,
    currentStep: { id: a.steps[0].id, position: 1, state: 'due', assigneeUserId: rt.worker.id }
  })
  const [hook, review] = got.data.steps
  t.match(hook, {
    position: 1, kind: 'webhook', name: 'Order valuation', state: 'due', serviceId: rt.serviceId,
    start: { mode: 'afterPrevious' }, refersTo: { property: true, address: false },
    startAt: now.toISOString(), startedAt: now.toISOString(), endedAt: null,
    assigneeUserId: rt.worker.id, deadlineAt: new Date(now.getTime() + 2 * DAY).toISOString(),
    delivery: { status: 'pending', round: 1, attempts: 0, nextAttemptAt: now.toISOString(), lastStatusCode: null, lastError: null }
  })
  t.match(review, { position: 2, kind: 'task', state: 'pending', startAt: null, startedAt: null, assigneeUserId: null, deadlineAt: null, delivery: null })
  t.match(await rt.instance(b.id), {
    currentStep: { state: 'waiting', assigneeUserId: null, startAt: new Date(now.getTime() + 2 * DAY).toISOString() },
    steps: [{ state: 'waiting', startedAt: null }]
  }, 'a first step starting later waits, unassigned')
  assertProblem(t, await rt.api.get(`${base}/${randomUUID()}`), 404)

  const list = async (query: string) => listedIds(await rt.api.get(`${base}?${query}`))
  t.same(await list(`templateId=${hookFirst}`), [c.id, a.id], 'newest first')
  t.same(await list(`templateId=${hookFirst}&status=running`), [a.id])
  t.same(await list(`templateId=${hookFirst}&status=cancelled`), [c.id])
  t.same(await list(`propertyId=${property}`), [c.id, a.id])
  t.same(await list(`templateId=${waitFirst}`), [b.id])
  const due = await list('currentStepState=due')
  const waiting = await list('currentStepState=waiting')
  t.ok(due.includes(a.id) && due.includes(d.id) && !due.includes(b.id) && !due.includes(c.id), 'due: a and d')
  t.ok(waiting.includes(b.id) && !waiting.includes(a.id), 'waiting: b')
  const byWorker = await list(`assigneeUserId=${rt.worker.id}`)
  const byController = await list(`assigneeUserId=${rt.controller.id}`)
  t.ok(byWorker.includes(a.id) && !byWorker.includes(d.id) && !byWorker.includes(c.id), 'assignee: the current step\'s')
  t.ok(byController.includes(d.id) && !byController.includes(a.id))

  const summary = (await rt.api.get(`${base}?templateId=${hookFirst}&status=running`)).data.items[0]
  t.match(summary, { id: a.id, propertyId: property, currentStep: { name: 'Order valuation', state: 'due', assigneeUserId: rt.worker.id } })
  t.notOk('steps' in summary, 'the list carries summaries')

  const page1 = await rt.api.get(`${base}?templateId=${hookFirst}&limit=1`)
  t.same(listedIds(page1), [c.id])
  t.type(page1.data.nextCursor, 'string')
  const page2 = await rt.api.get(`${base}?templateId=${hookFirst}&limit=1&cursor=${page1.data.nextCursor}`)
  t.same(listedIds(page2), [a.id])
  t.equal(page2.data.nextCursor, null)
  assertProblem(t, await rt.api.get(`${base}?cursor=garbage`), 400)
  assertProblem(t, await rt.api.get(`${base}?currentStepState=pending`), 400)
})

t.test('responsibility is resolved when each step starts: the maintainer then, the process\'s responsible user for a record without one', async (t) => {
  const rita = (await rt.api.post('/v1/users', { name: 'Rita Responsible', email: 'rita@example.com' })).data
  const mia = (await rt.api.post('/v1/users', { name: 'Mia Maintainer', email: 'mia@example.com' })).data
  const property = await newProperty()
  const address = (await rt.api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { name: 'Erika' } })).data.id
  const templateId = await rt.template([
    { kind: 'task', name: 'Resp: first' },
    { kind: 'task', name: 'Resp: property', responsibility: 'propertyMaintainer', refersTo: { property: true }, start: { mode: 'daysAfterPrevious', days: 1 } },
    { kind: 'task', name: 'Resp: address', responsibility: 'addressMaintainer', refersTo: { address: true } },
    { kind: 'task', name: 'Resp: named', responsibility: { user: rt.controller.id } }
  ])
  const started = await rt.start(templateId, { responsibleUserId: rita.id, propertyId: property, addressId: address })
  t.match(started.steps[0], { state: 'due', assigneeUserId: rita.id }, 'processResponsible: the process\'s responsible user')
  t.same(started.steps.slice(1).map((s: { assigneeUserId: string | null }) => s.assigneeUserId), [null, null, null], 'later steps are not resolved yet')

  const waiting = await advance(started.id, { outcome: 'done' })
  t.match(waiting.data.steps[1], { state: 'waiting', assigneeUserId: null })
  // The maintainers change after the process started, before the steps that name them start.
  t.equal((await rt.api.patch(`/v1/properties/${property}`, { maintainerUserId: mia.id })).statusCode, 200)
  t.equal((await rt.api.patch(`/v1/addresses/${address}`, { maintainerUserId: null })).statusCode, 200)

  rt.clock.advance(DAY)
  await rt.scheduler.runOnce()
  const due = await rt.instance(started.id)
  t.match(due.steps[1], { state: 'due', assigneeUserId: mia.id }, 'a waiting step started by the scheduler: the property\'s maintainer as it is then')
  const listed = (await rt.api.get(`${base}?templateId=${templateId}`)).data.items
  t.match(listed, [{ id: started.id, propertyId: property, addressId: address, currentStep: { name: 'Resp: property', state: 'due', assigneeUserId: mia.id } }],
    'the list shows the current step\'s state, its assignee and the linked records')

  const toAddress = await advance(started.id, { outcome: 'done' })
  t.match(toAddress.data.steps[2], { state: 'due', assigneeUserId: rita.id }, 'an address without a maintainer: the process\'s responsible user')
  const toNamed = await advance(started.id, { outcome: 'done' })
  t.match(toNamed.data.steps[3], { state: 'due', assigneeUserId: rt.controller.id }, 'a named user')
  t.same(toNamed.data.steps.slice(0, 3).map((s: { assigneeUserId: string }) => s.assigneeUserId), [rita.id, mia.id, rita.id], 'an assignee stays once resolved')
})

t.test('a first step handed to a maintainer gets the maintainer as each start finds it, from a template started before too', async (t) => {
  const address = (await rt.api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { name: 'Olaf' } })).data.id
  const templateId = await rt.template([{ kind: 'task', name: 'Resp: call', responsibility: 'addressMaintainer', refersTo: { address: true } }])
  const first = await rt.start(templateId, { propertyId: undefined, addressId: address })
  t.match(first.steps[0], { state: 'due', assigneeUserId: rt.worker.id })
  t.equal((await rt.api.patch(`/v1/addresses/${address}`, { maintainerUserId: rt.controller.id })).statusCode, 200)
  const second = await rt.start(templateId, { propertyId: undefined, addressId: address })
  t.match(second.steps[0], { state: 'due', assigneeUserId: rt.controller.id }, 'the new maintainer')
  t.equal((await rt.api.patch(`/v1/addresses/${address}`, { maintainerUserId: null })).statusCode, 200)
  const third = await rt.start(templateId, { propertyId: undefined, addressId: address })
  t.match(third.steps[0], { state: 'due', assigneeUserId: rt.worker.id }, 'no maintainer: the process\'s responsible user')
  t.same((await rt.instance(third.id)).steps[0].assigneeUserId, rt.worker.id, 'as a read shows it')
})

t.test('a process keeps the template as it started: a template without a controller makes its responsible user the controller, later edits reach no running process', async (t) => {
  const rita = (await rt.api.post('/v1/users', { name: 'Rita Ruler', email: 'rita.ruler@example.com' })).data
  const created = await rt.api.post('/v1/process-templates', { name: 'Copy: no controller' })
  t.equal(created.statusCode, 201, created.body)
  const url = `/v1/process-templates/${created.data.id}`
  const first = (await rt.api.post(`${url}/steps`, { kind: 'task', name: 'Copy: first', start: { mode: 'afterPrevious' }, responsibility: 'processResponsible' })).data
  const second = (await rt.api.post(`${url}/steps`, { kind: 'task', name: 'Copy: second', start: { mode: 'afterPrevious' }, responsibility: 'processResponsible' })).data
  const activated = await rt.api.patch(url, { active: true }, { 'if-match': `"${(await rt.api.get(url)).data.version}"` })
  t.equal(activated.statusCode, 200, activated.body)
  const started = await rt.start(created.data.id, { responsibleUserId: rita.id, propertyId: undefined })
  t.match(started, { controllerUserId: rita.id, templateName: 'Copy: no controller' }, 'no controller on the template: the process\'s responsible user')

  // The template changes after the start: a controller, a renamed and re-assigned step, a step removed, one added.
  const template = (await rt.api.get(url)).data
  const edited = await rt.api.patch(url, { name: 'Copy: renamed', controllerUserId: rt.controller.id }, { 'if-match': `"${template.version}"` })
  t.equal(edited.statusCode, 200, edited.body)
  const renamed = await rt.api.patch(`${url}/steps/${first.id}`, { name: 'Copy: first, renamed', responsibility: { user: rt.controller.id } })
  t.equal(renamed.statusCode, 200, renamed.body)
  t.equal((await rt.api.delete(`${url}/steps/${second.id}`)).statusCode, 204)
  t.equal((await rt.api.post(`${url}/steps`, { kind: 'task', name: 'Copy: added', start: { mode: 'afterPrevious' }, responsibility: 'processResponsible' })).statusCode, 201)

  const unchanged = await rt.instance(started.id)
  t.match(unchanged, { controllerUserId: rita.id, templateName: 'Copy: no controller' })
  t.same(unchanged.steps.map((s: { name: string }) => s.name), ['Copy: first', 'Copy: second'], 'the steps copied at the start')
  const advanced = await advance(started.id, { outcome: 'skipped' })
  t.equal(advanced.statusCode, 200, advanced.body)
  t.match(advanced.data.steps[1], { name: 'Copy: second', state: 'due', assigneeUserId: rita.id }, 'the copy\'s step starts, though the template\'s is gone')
  await rt.scheduler.runOnce()
  const mail = rt.smtp.mails.find((m) => m.subject.startsWith('Step skipped: "Copy: first"'))
  t.same(mail?.to, [rita.email], 'the skip mail goes to the controller the process has, not the template\'s new one')
})

t.test('advance follows the rules of docs/architecture.md (Advancing)', async (t) => {
  t.test('due task: done; waiting step: only skipped; completed: 409', async (t) => {
    const templateId = await rt.template([
      { kind: 'task', name: 'Advance: first' },
      { kind: 'task', name: 'Advance: later', start: { mode: 'daysAfterPrevious', days: 1 } },
      { kind: 'task', name: 'Advance: last' }
    ])
    const started = await rt.start(templateId, { propertyId: undefined })
    const [first, later, last] = stepIds(started)

    assertProblem(t, await advance(started.id, { outcome: 'done', stepId: later }), 409, /not the current step/)
    const done = await advance(started.id, { outcome: 'done', stepId: first })
    t.equal(done.statusCode, 200, done.body)
    t.same(states(done.data), ['done', 'waiting', 'pending'])
    t.equal(done.data.version, started.version + 1)

    assertProblem(t, await advance(started.id, { outcome: 'done', stepId: later }), 409, /can only be skipped/)
    const skipped = await advance(started.id, { outcome: 'skipped', stepId: later, note: 'No need to wait' })
    t.equal(skipped.statusCode, 200, skipped.body)
    t.same(states(skipped.data), ['done', 'skipped', 'due'])
    t.equal(skipped.data.steps[1].note, 'No need to wait')

    const finished = await advance(started.id, { outcome: 'skipped', stepId: last })
    t.equal(finished.data.status, 'completed')
    t.equal(finished.data.currentStep, null)
    assertProblem(t, await advance(started.id, { outcome: 'done' }), 409, /completed/)

    await rt.scheduler.runOnce()
    const skipMails = rt.smtp.mails.filter((m) => m.subject.startsWith('Step skipped: "Advance: later"'))
    t.equal(skipMails.length, 1, 'a skipped step is mailed to the controller')
    t.same(skipMails[0]!.to, [rt.controller.email])
    t.match(skipMails[0]!.text, /No need to wait/)
  })

  t.test('a cancelled process cannot be advanced', async (t) => {
    const started = await rt.start(await rt.template([{ kind: 'task', name: 'Advance: cancelled' }]), { propertyId: undefined })
    t.equal((await rt.api.post(`${base}/${started.id}/cancel`, {})).statusCode, 200)
    assertProblem(t, await advance(started.id, { outcome: 'skipped' }), 409, /cancelled/)
    assertProblem(t, await advance(randomUUID(), { outcome: 'skipped' }), 404)
  })

  t.test('a due webhook not yet claimed: skipping cancels its delivery, done is refused', async (t) => {
    const templateId = await rt.template([{ kind: 'webhook', name: 'Advance: unclaimed hook' }, { kind: 'task', name: 'Advance: after hook' }])
    const started = await rt.start(templateId, { propertyId: undefined })
    const [hook] = stepIds(started)
    const calls = rt.provider.calls.length

    assertProblem(t, await advance(started.id, { outcome: 'done', stepId: hook }), 409, /can only be skipped/)
    t.equal((await deliveriesOf(hook!))[0].status, 'pending', 'the refused advance left the delivery queued')

    const skipped = await advance(started.id, { outcome: 'skipped', stepId: hook })
    t.equal(skipped.statusCode, 200, skipped.body)
    t.same(states(skipped.data), ['skipped', 'due'])
    t.equal(skipped.data.steps[0].delivery.status, 'cancelled')
    const [delivery] = await deliveriesOf(hook!)
    t.match(delivery, { status: 'cancelled', finishedAt: String, attempts: [], lastError: 'cancelled: the step was skipped before the call' })

    const run = await rt.scheduler.runOnce()
    t.equal(run.deliveries, 0)
    t.equal(rt.provider.calls.length, calls, 'the provider is not called')
  })

  t.test('a webhook step waiting for its next attempt is due again: skipping it cancels the retry', async (t) => {
    const templateId = await rt.template([{ kind: 'webhook', name: 'Advance: busy hook' }, { kind: 'task', name: 'Advance: after busy hook' }])
    const started = await rt.start(templateId, { propertyId: undefined })
    const [hook] = stepIds(started)
    rt.provider.always({ status: 503, body: 'busy' })
    t.equal((await rt.scheduler.runOnce()).deliveries, 1)
    const between = await rt.instance(started.id)
    t.match(between.steps[0], { state: 'due', delivery: { status: 'pending', attempts: 1, lastStatusCode: 503 } })
    t.match(between.currentStep, { state: 'due' })
    assertProblem(t, await advance(started.id, { outcome: 'done', stepId: hook }), 409, /can only be skipped/)

    const skipped = await advance(started.id, { outcome: 'skipped', stepId: hook, note: 'Provider down, valued by hand' })
    t.equal(skipped.statusCode, 200, skipped.body)
    t.same(states(skipped.data), ['skipped', 'due'])
    // The previous attempt's 503 stays its status; lastError says why no attempt follows it.
    t.match(skipped.data.steps[0].delivery, { status: 'cancelled', attempts: 1, lastStatusCode: 503, lastError: 'cancelled: the step was skipped before the call' })
    const calls = rt.provider.calls.filter((c) => c.query.stepId === hook).length
    rt.clock.advance(DAY)
    t.equal((await rt.scheduler.runOnce()).deliveries, 0, 'the retry is not made')
    t.equal(rt.provider.calls.filter((c) => c.query.stepId === hook).length, calls)
  })

  t.test('a running webhook cannot be advanced or cancelled', async (t) => {
    const templateId = await rt.template([{ kind: 'webhook', name: 'Advance: running hook' }, { kind: 'task', name: 'Advance: after running' }])
    const started = await rt.start(templateId, { propertyId: undefined })
    const [hook] = stepIds(started)

    // A worker claims the delivery, as the scheduler does just before its call.
    const claims = await claimDeliveries(rt.db, { workerId: 'test-holder', now: rt.clock.now(), leaseMs: MINUTE, limit: 10 })
    t.same(claims.map((c) => c.stepId), [hook])
    t.equal((await rt.instance(started.id)).steps[0].state, 'running')

    assertProblem(t, await advance(started.id, { outcome: 'skipped', stepId: hook }), 409, /in flight/)
    assertProblem(t, await advance(started.id, { outcome: 'done' }), 409, /in flight/)
    assertProblem(t, await rt.api.post(`${base}/${started.id}/cancel`, {}), 409, /calling its webhook/)
    t.same(states(await rt.instance(started.id)), ['running', 'pending'], 'nothing changed')

    // The holder vanishes; after its lease another worker delivers and the process moves on.
    rt.clock.advance(MINUTE + 1000)
    const run = await rt.scheduler.runOnce()
    t.match(run, { reaped: 1, deliveries: 1 })
    t.same(states(await rt.instance(started.id)), ['done', 'due'])
  })

  t.test('the answer of a start and of each advance is the process as a read then shows it', async (t) => {
    const templateId = await rt.template([
      { kind: 'task', name: 'Answer: first', deadlineDays: 2 },
      { kind: 'webhook', name: 'Answer: hook' },
      { kind: 'task', name: 'Answer: later', start: { mode: 'daysAfterPrevious', days: 1 } },
      { kind: 'task', name: 'Answer: last', deadlineDays: 1 }
    ])
    const started = await rt.start(templateId, { propertyId: undefined })
    t.same(started, (await rt.api.get(`${base}/${started.id}`)).data, 'the start')
    const [first, hook, later, last] = stepIds(started)
    for (const [stepId, outcome] of [[first, 'done'], [hook, 'skipped'], [later, 'skipped'], [last, 'done']] as const) {
      rt.clock.advance(MINUTE)
      const answer = await advance(started.id, { outcome, stepId })
      t.equal(answer.statusCode, 200, answer.body)
      t.same(answer.data, (await rt.api.get(`${base}/${started.id}`)).data, `${outcome} ${stepId}`)
    }
    t.equal((await rt.instance(started.id)).status, 'completed')
  })

  t.test('two concurrent advances of one instance: one wins, one 409', async (t) => {
    const templateId = await rt.template(['one', 'two', 'three'].map((n) => ({ kind: 'task', name: `Advance: race ${n}` })))
    const started = await rt.start(templateId, { propertyId: undefined })
    const [first] = stepIds(started)
    const answers = await Promise.all([0, 1].map(() => advance(started.id, { outcome: 'done', stepId: first })))
    t.same(answers.map((a) => a.statusCode).sort(), [200, 409], answers.map((a) => a.body).join('\n'))
    const view = await rt.instance(started.id)
    t.same(states(view), ['done', 'due', 'pending'], 'exactly one step ended')
    t.equal(view.version, started.version + 1)
    const ended = (await rt.api.get(`${base}/${started.id}/activities`)).data.items.filter((a: { kind: string }) => a.kind === 'stepDone')
    t.equal(ended.length, 1)
  })
})

t.test('an advance the table refuses changes nothing: not the steps, the version, the log or a due call', async (t) => {
  const other = await rt.start(await rt.template([{ kind: 'task', name: 'Refused: other' }]), { propertyId: undefined })
  const task = await rt.start(await rt.template([{ kind: 'task', name: 'Refused: task' }, { kind: 'task', name: 'Refused: next' }]), { propertyId: undefined })
  const hook = await rt.start(await rt.template([{ kind: 'webhook', name: 'Refused: hook' }, { kind: 'task', name: 'Refused: after hook' }]), { propertyId: undefined })
  const waits = await rt.start(await rt.template([
    { kind: 'task', name: 'Refused: waits', start: { mode: 'daysAfterPrevious', days: 2 } }, { kind: 'task', name: 'Refused: after waiting' }
  ]), { propertyId: undefined })
  const cases: [InstanceView, Record<string, unknown>, number][] = [
    [task, { outcome: 'failed' }, 400], [task, { outcome: 'cancelled' }, 400], [task, {}, 400], [task, { outcome: 'done', stepId: 'first' }, 400],
    [task, { outcome: 'done', stepId: other.steps[0].id }, 409], [task, { outcome: 'done', stepId: task.steps[1].id }, 409],
    [task, { outcome: 'done', stepId: randomUUID() }, 409], [task, { outcome: 'done', decision: 'yes' }, 422],
    [task, { outcome: 'done', email: { subject: 'x' } }, 422],
    [hook, { outcome: 'done' }, 409], [hook, { outcome: 'skipped', decision: 'no' }, 422], [hook, { outcome: 'skipped', email: { body: 'x' } }, 422],
    [waits, { outcome: 'done' }, 409], [waits, { outcome: 'done', stepId: waits.steps[0].id }, 409], [waits, { outcome: 'skipped', stepId: waits.steps[1].id }, 409]
  ]
  const activities = async (id: string) => (await rt.api.get(`${base}/${id}/activities?limit=200`)).data.items.length
  for (const [instance, body, status] of cases) {
    const before = await rt.instance(instance.id)
    const logged = await activities(instance.id)
    assertProblem(t, await advance(instance.id, body), status)
    const after = await rt.instance(instance.id)
    t.same(states(after), states(before), `${JSON.stringify(body)}: the steps as they were`)
    t.equal(after.version, before.version)
    t.equal(await activities(instance.id), logged)
  }
  t.equal((await deliveriesOf(hook.steps[0].id))[0].status, 'pending', 'the refused skips left the call queued')
})

t.test('a waiting step of any kind skipped carries out nothing, and the next step starts now', async (t) => {
  const child = await rt.template([{ kind: 'task', name: 'Skip waiting: child' }])
  const kinds: StepInput[] = [
    { kind: 'webhook', name: 'Skip waiting: hook' },
    { kind: 'email', name: 'Skip waiting: mail', email: { mode: 'automatic', to: 'assignee', subject: 'Skip waiting: mail', body: 'b' } },
    { kind: 'writeValues', name: 'Skip waiting: write', refersTo: { property: true }, writeValues: { values: [{ record: 'property', field: 'skipped', value: true }] } },
    { kind: 'followUpProcess', name: 'Skip waiting: follow-up', followUp: { templateId: child, waitForCompletion: false } }
  ]
  const property = await newProperty()
  const started: InstanceView[] = []
  for (const step of kinds) {
    const templateId = await rt.template([{ ...step, start: { mode: 'daysAfterPrevious', days: 2 } }, { kind: 'task', name: 'Skip waiting: next' }])
    const instance = await rt.start(templateId, { propertyId: property })
    t.equal(instance.steps[0].state, 'waiting')
    rt.clock.advance(MINUTE)
    const skipped = await advance(instance.id, { outcome: 'skipped', stepId: instance.steps[0].id })
    t.equal(skipped.statusCode, 200, skipped.body)
    t.match(skipped.data.steps, [{ state: 'skipped' }, { state: 'due', startAt: rt.clock.now().toISOString(), assigneeUserId: rt.worker.id }])
    started.push(instance)
  }
  const calls = rt.provider.calls.length
  rt.clock.advance(3 * DAY)
  await rt.scheduler.runOnce()
  t.equal(rt.provider.calls.length, calls, 'no call')
  t.same(await deliveriesOf(started[0].steps[0].id), [], 'no delivery')
  t.notOk(rt.smtp.mails.some((m) => m.subject === 'Skip waiting: mail'), 'no mail')
  t.notOk('skipped' in (await rt.api.get(`/v1/properties/${property}`)).data.fields, 'nothing written')
  t.same((await rt.api.get(`${base}?parentId=${started[3].id}`)).data.items, [], 'no follow-up process')
  for (const instance of started) t.same(states(await rt.instance(instance.id)), ['skipped', 'due'])
})

t.test('a waiting step starts at its start time to the millisecond, not before', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Exact: first' }, { kind: 'task', name: 'Exact: later', start: { mode: 'daysAfterPrevious', days: 1 } }])
  rt.clock.set('2026-05-04T10:00:00.123Z')
  const started = await rt.start(templateId, { propertyId: undefined })
  t.equal((await advance(started.id, { outcome: 'done' })).data.steps[1].startAt, '2026-05-05T10:00:00.123Z')
  rt.clock.set('2026-05-05T10:00:00.122Z')
  await rt.scheduler.runOnce()
  t.equal((await rt.instance(started.id)).steps[1].state, 'waiting')
  t.same(listedIds(await rt.api.get(`${base}?templateId=${templateId}&currentStepState=waiting`)), [started.id])
  rt.clock.set('2026-05-05T10:00:00.123Z')
  await rt.scheduler.runOnce()
  t.match((await rt.instance(started.id)).steps[1], { state: 'due', startedAt: '2026-05-05T10:00:00.123Z', assigneeUserId: rt.worker.id })
  t.same(listedIds(await rt.api.get(`${base}?templateId=${templateId}&currentStepState=due`)), [started.id])
})

t.test('cancel ends the open steps and the pending delivery; a second cancel is 409', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Cancel: hook' }, { kind: 'task', name: 'Cancel: task' }])
  const started = await rt.start(templateId, { propertyId: undefined })
  const calls = rt.provider.calls.length
  rt.clock.advance(MINUTE)

  const cancelled = await rt.api.post(`${base}/${started.id}/cancel`, { note: 'Owner withdrew' })
  t.equal(cancelled.statusCode, 200, cancelled.body)
  t.match(cancelled.data, { status: 'cancelled', endedAt: rt.clock.now().toISOString(), currentStep: null, version: started.version + 1 })
  t.same(states(cancelled.data), ['cancelled', 'cancelled'])
  t.equal(cancelled.data.steps[1].endedAt, rt.clock.now().toISOString())
  t.same((await deliveriesOf(started.steps[0].id)).map((d: { status: string; lastError: string }) => [d.status, d.lastError]),
    [['cancelled', 'cancelled: the process was cancelled before the call']], 'the delivery says why it was cancelled')
  const activity = (await rt.api.get(`${base}/${started.id}/activities?limit=1`)).data.items[0]
  t.match(activity, { kind: 'processCancelled', data: { note: 'Owner withdrew' } })
  t.match(activity.message, /cancelled: "Owner withdrew"\.$/, 'the message quotes the note')

  assertProblem(t, await rt.api.post(`${base}/${started.id}/cancel`, {}), 409, /already cancelled/)
  t.equal((await rt.scheduler.runOnce()).deliveries, 0)
  t.equal(rt.provider.calls.length, calls, 'the cancelled delivery is never called')

  const another = await rt.start(templateId, { propertyId: undefined })
  const bare = await rt.api.post(`${base}/${another.id}/cancel`)
  t.equal(bare.statusCode, 200, `a POST with no payload cancels: ${bare.body}`)
  t.equal(bare.data.status, 'cancelled')
  assertProblem(t, await rt.api.post(`${base}/${another.id}/cancel`, { reason: 'x' }), 400)
  assertProblem(t, await rt.api.post(`${base}/${randomUUID()}/cancel`), 404)
})

t.test('a failed webhook step: advance it by hand, or retry it in a new round', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Retry: valuation' }, { kind: 'task', name: 'Retry: review' }])
  const resolved = await rt.start(templateId, { propertyId: undefined })
  const retried = await rt.start(templateId, { propertyId: undefined })
  const [hook] = stepIds(retried)
  const mailsBefore = failedMails().length

  rt.provider.always({ status: 404, body: 'no such estate' })
  const run = await rt.scheduler.runOnce()
  t.equal(run.deliveries, 2)
  for (const id of [resolved.id, retried.id]) {
    const view = await rt.instance(id)
    t.same(states(view), ['failed', 'pending'], '404 gives up at once')
    t.match(view.steps[0].delivery, { status: 'failed', round: 1, attempts: 1, lastStatusCode: 404 })
  }
  await rt.scheduler.runOnce()
  const mails = failedMails().slice(mailsBefore)
  t.equal(mails.length, 2, 'one mail per failed step')
  t.ok(mails.every((m) => m.to.join() === rt.controller.email))
  t.ok(mails.some((m) => m.text.includes(retried.id)))

  const byHand = await advance(resolved.id, { outcome: 'done', stepId: resolved.steps[0].id, note: 'Valued by phone' })
  t.equal(byHand.statusCode, 200, byHand.body)
  t.same(states(byHand.data), ['done', 'due'])
  assertProblem(t, await rt.api.post(`${base}/${resolved.id}/steps/${resolved.steps[0].id}/retry`), 409, /Only a failed webhook step/)

  const failed = await rt.instance(retried.id)
  t.equal(failed.version, retried.version + 1, 'the scheduler failing the step is a change too')
  const again = await rt.api.post(`${base}/${retried.id}/steps/${hook}/retry`)
  t.equal(again.statusCode, 200, again.body)
  t.equal(again.data.steps[0].state, 'due')
  t.match(again.data.steps[0].delivery, { status: 'pending', round: 2, attempts: 0 })
  t.equal(again.data.version, failed.version + 1)
  assertProblem(t, await rt.api.post(`${base}/${retried.id}/steps/${hook}/retry`), 409, /due webhook step/)

  rt.provider.always({ status: 200, body: 'valued' })
  t.equal((await rt.scheduler.runOnce()).deliveries, 1)
  t.same(states(await rt.instance(retried.id)), ['done', 'due'])
  const [delivery] = await deliveriesOf(hook!)
  t.match(delivery, { status: 'succeeded', round: 2, attemptCount: 1 })
  t.same(delivery.attempts.map((a: { round: number; attempt: number; outcome: string; statusCode: number }) => [a.round, a.attempt, a.outcome, a.statusCode]),
    [[1, 1, 'failed', 404], [2, 1, 'succeeded', 200]], 'both rounds are in the attempt log')
  t.equal(delivery.attempts[0].responseBody, 'no such estate')
  const kinds = (await rt.api.get(`${base}/${retried.id}/activities`)).data.items.map((a: { kind: string }) => a.kind)
  t.ok(kinds.includes('webhookFailed') && kinds.includes('webhookRetried'))

  assertProblem(t, await rt.api.post(`${base}/${retried.id}/steps/${retried.steps[1].id}/retry`), 409, /task step/)
  assertProblem(t, await rt.api.post(`${base}/${retried.id}/steps/${randomUUID()}/retry`), 404)
  assertProblem(t, await rt.api.post(`${base}/${retried.id}/steps/${resolved.steps[0].id}/retry`), 404, /Step/)
})

t.test('calendar days keep the wall-clock time across DST changes (Europe/Berlin)', async (t) => {
  const templateId = await rt.template([
    { kind: 'task', name: 'DST: prepare' },
    { kind: 'task', name: 'DST: visit', start: { mode: 'daysAfterPrevious', days: 2 } }
  ])
  rt.clock.set('2026-03-27T09:00:00Z') // Friday 10:00 CET
  const started = await rt.start(templateId, { propertyId: undefined })
  const advanced = await advance(started.id, { outcome: 'done' })
  t.match(advanced.data.steps[1], { state: 'waiting', startAt: '2026-03-29T08:00:00.000Z' }, 'Sunday 10:00 CEST')

  rt.clock.set('2026-03-29T07:59:00Z')
  await rt.scheduler.runOnce()
  t.equal((await rt.instance(started.id)).steps[1].state, 'waiting', 'not an hour early')
  rt.clock.set('2026-03-29T08:00:00Z')
  await rt.scheduler.runOnce()
  t.match((await rt.instance(started.id)).steps[1], { state: 'due', startedAt: '2026-03-29T08:00:00.000Z' })

  const deadlineTemplate = await rt.template([{ kind: 'task', name: 'DST: reply', deadlineDays: 1 }])
  rt.clock.set('2026-10-24T08:00:00Z') // Saturday 10:00 CEST
  const withDeadline = await rt.start(deadlineTemplate, { propertyId: undefined })
  t.equal(withDeadline.steps[0].deadlineAt, '2026-10-25T09:00:00.000Z', 'Sunday 10:00 CET: 25 hours later')
})

t.test('calendar days in the tenant\'s zone when the scheduler moves a process on: a webhook\'s success, a waiting step starting (Europe/Berlin)', async (t) => {
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Scheduler DST: order' },
    { kind: 'task', name: 'Scheduler DST: visit', start: { mode: 'daysAfterPrevious', days: 2 }, deadlineDays: 1 },
    { kind: 'webhook', name: 'Scheduler DST: report', deadlineDays: 1 }
  ])
  rt.clock.set('2026-03-27T09:00:00Z') // Friday 10:00 CET
  const started = await rt.start(templateId, { propertyId: undefined })
  await rt.scheduler.runOnce()
  t.match((await rt.instance(started.id)).steps[1], { state: 'waiting', startAt: '2026-03-29T08:00:00.000Z' }, 'Sunday 10:00 CEST, after the webhook\'s success')
  rt.clock.set('2026-03-29T07:59:00Z')
  await rt.scheduler.runOnce()
  t.equal((await rt.instance(started.id)).steps[1].state, 'waiting', 'not an hour early')
  rt.clock.set('2026-03-29T08:00:00Z')
  await rt.scheduler.runOnce()
  t.match((await rt.instance(started.id)).steps[1], { state: 'due', deadlineAt: '2026-03-30T08:00:00.000Z' }, 'started by the scheduler: Monday 10:00 CEST')
  rt.clock.set('2026-10-24T08:00:00Z') // Saturday 10:00 CEST
  const advanced = await advance(started.id, { outcome: 'done' })
  t.match(advanced.data.steps[2], { state: 'due', deadlineAt: '2026-10-25T09:00:00.000Z' }, 'Sunday 10:00 CET: 25 hours later')
})

t.test('a step 0 days after its previous one starts when that one ended, in the second hour of a fall-back too (America/New_York)', async (t) => {
  const zone = (await rt.operator.get(`/v1/tenants/${rt.tenant.id}`)).data.timeZone
  t.equal((await rt.operator.patch(`/v1/tenants/${rt.tenant.id}`, { timeZone: 'America/New_York' })).statusCode, 200)
  t.teardown(async () => {
    await rt.operator.patch(`/v1/tenants/${rt.tenant.id}`, { timeZone: zone })
  })
  const templateId = await rt.template([
    { kind: 'task', name: 'Fall-back: prepare' },
    { kind: 'task', name: 'Fall-back: same day', start: { mode: 'daysAfterPrevious', days: 0 } },
    { kind: 'task', name: 'Fall-back: next day', start: { mode: 'daysAfterPrevious', days: 1 } }
  ])
  rt.clock.set('2026-11-01T05:00:00Z') // 01:00 EDT; at 06:00Z the clocks go back to 01:00 EST
  const started = await rt.start(templateId, { propertyId: undefined })
  rt.clock.set('2026-11-01T06:30:00Z') // the second 01:30
  const advanced = await advance(started.id, { outcome: 'done' })
  t.match(advanced.data.steps[0], { state: 'done', endedAt: '2026-11-01T06:30:00.000Z' })
  t.match(advanced.data.steps[1], { state: 'due', startAt: '2026-11-01T06:30:00.000Z', startedAt: '2026-11-01T06:30:00.000Z' }, 'not at the first 01:30, an hour before')
  const next = await advance(started.id, { outcome: 'done' })
  t.match(next.data.steps[2], { state: 'waiting', startAt: '2026-11-02T06:30:00.000Z' }, 'the next day at 01:30 EST')
})

t.test('a webhook call carries the ids of the records its step refers to, and only those', async (t) => {
  const property = await newProperty()
  const address = (await rt.api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { name: 'Max' } })).data.id
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Ids: none' },
    { kind: 'webhook', name: 'Ids: address', refersTo: { address: true } },
    { kind: 'webhook', name: 'Ids: both', refersTo: { property: true, address: true } }
  ])
  const started = await rt.start(templateId, { propertyId: property, addressId: address })
  const ids = stepIds(started)
  for (let i = 0; i < 3; i += 1) await rt.scheduler.runOnce()
  t.same(states(await rt.instance(started.id)), ['done', 'done', 'done'])
  const callOf = (stepId: string) => rt.provider.calls.find((c) => c.query.stepId === stepId)?.query
  const recordIds = (stepId: string) => ({ estateId: callOf(stepId)?.estateId, addressId: callOf(stepId)?.addressId })
  t.same(recordIds(ids[0]!), { estateId: undefined, addressId: undefined }, 'a step that refers to no record: neither id, though the process has both')
  t.same(recordIds(ids[1]!), { estateId: undefined, addressId: address })
  t.same(recordIds(ids[2]!), { estateId: property, addressId: address })
  const onAddress = (await rt.api.get(`/v1/addresses/${address}/activities`)).data.items
  t.same([...new Set(onAddress.map((a: { stepId: string | null }) => a.stepId).filter(Boolean))].sort(), [ids[1], ids[2]].sort(),
    'the address log holds the steps that refer to it')
})

t.test('another tenant cannot see or touch the instance', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Isolation: hook' }, { kind: 'task', name: 'Isolation: task' }])
  const started = await rt.start(templateId, { propertyId: undefined })
  const [hook] = stepIds(started)
  const deliveryId = started.steps[0].delivery.id
  const other = (await rt.newTenant()).client

  await assertIsolated(t, other, { collection: base, id: started.id, deletable: false })
  await assertIsolated(t, other, { collection: '/v1/deliveries', id: deliveryId, deletable: false })
  assertProblem(t, await other.post(`${base}/${started.id}/advance`, { outcome: 'skipped' }), 404)
  assertProblem(t, await other.post(`${base}/${started.id}/cancel`, {}), 404)
  assertProblem(t, await other.post(`${base}/${started.id}/steps/${hook}/retry`), 404)
  assertProblem(t, await other.get(`${base}/${started.id}/activities`), 404)
  t.same((await other.get(`${base}?templateId=${templateId}`)).data.items, [])
  t.same((await other.get(`/v1/deliveries?instanceId=${started.id}`)).data.items, [])
  t.same((await other.get(`/v1/deliveries?stepId=${hook}`)).data.items, [])

  t.match(await rt.instance(started.id), { status: 'running', version: started.version }, 'untouched')
})

t.test('activities: the instance logs everything, a record only its steps and the process events', async (t) => {
  const property = await newProperty()
  const templateId = await rt.template([
    { kind: 'task', name: 'Activities: inspect', refersTo: { property: true } },
    { kind: 'task', name: 'Activities: internal', refersTo: { property: false } }
  ], { notifyOnCompletion: false })
  const started = await rt.start(templateId, { propertyId: property })
  const [inspect, internal] = stepIds(started)
  await advance(started.id, { outcome: 'done', stepId: inspect, note: 'Roof fine' })
  await advance(started.id, { outcome: 'skipped', stepId: internal })

  const onInstance = (await rt.api.get(`${base}/${started.id}/activities`)).data.items.reverse()
  t.same(onInstance.map((a: { kind: string; stepId: string | null }) => [a.kind, a.stepId]), [
    ['processStarted', null], ['stepStarted', inspect], ['stepDone', inspect],
    ['stepStarted', internal], ['stepSkipped', internal], ['processCompleted', null]
  ])
  t.ok(onInstance.every((a: { instanceId: string }) => a.instanceId === started.id))
  t.match(onInstance[2], { message: /"Activities: inspect" done/, data: { note: 'Roof fine' } })
  t.match(onInstance[2].message, /done \([^)]+\): "Roof fine"\.$/, 'the message quotes the note')
  t.match(onInstance[4].message, /"Activities: internal" skipped \([^)]+\)\.$/, 'a step ended without a note says so plainly')

  const onProperty = (await rt.api.get(`/v1/properties/${property}/activities`)).data.items.reverse()
  t.same(onProperty.map((a: { kind: string; stepId: string | null }) => [a.kind, a.stepId]), [
    ['processStarted', null], ['stepStarted', inspect], ['stepDone', inspect], ['processCompleted', null]
  ], 'the step that does not refer to the property writes nothing there')
  t.ok(onProperty.every((a: { propertyId: string }) => a.propertyId === property))
  t.equal(onInstance.filter((a: { propertyId: string | null }) => a.propertyId === null).length, 2, 'internal entries carry no property')
  assertProblem(t, await rt.api.get(`${base}/${randomUUID()}/activities`), 404)
})

// --- helpers ---

function startRaw(body: Record<string, unknown>): Promise<Response> {
  return rt.api.post(base, { responsibleUserId: rt.worker.id, ...body })
}

function advance(id: string, body: Record<string, unknown>): Promise<Response> {
  return rt.api.post(`${base}/${id}/advance`, body)
}

async function deliveriesOf(stepId: string) {
  const response = await rt.api.get(`/v1/deliveries?stepId=${stepId}`)
  return response.data.items
}

async function newProperty(): Promise<string> {
  const created = await rt.api.post('/v1/properties', { maintainerUserId: rt.worker.id, fields: { street: 'Nebenweg 2' } })
  if (created.statusCode !== 201) throw new Error(`property: ${created.body}`)
  return created.data.id
}

function failedMails() {
  return rt.smtp.mails.filter((m) => m.subject.startsWith('Webhook step failed: "Retry: valuation"'))
}

function pointers(response: Response): string[] {
  return (response.data.errors ?? []).map((e: { pointer: string }) => e.pointer)
}

function listedIds(response: Response): string[] {
  return response.data.items.map((i: { id: string }) => i.id)
}

function stepIds(instance: InstanceView): string[] {
  return instance.steps.map((s: { id: string }) => s.id)
}

function states(instance: InstanceView): string[] {
  return instance.steps.map((s: { state: string }) => s.state)
}

/** Cancels what a subtest left running, so no later scheduler run acts on it. */
async function cancelRunning(rt: RuntimeContext): Promise<void> {
  const running = await rt.api.get(`${base}?status=running&limit=200`)
  for (const instance of running.data.items) {
    const cancelled = await rt.api.post(`${base}/${instance.id}/cancel`, {})
    if (cancelled.statusCode !== 200) throw new Error(`cleanup: ${cancelled.body}`)
  }
}
