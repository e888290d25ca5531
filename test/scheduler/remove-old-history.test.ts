import { openPostgres } from '../../src/db/connect.js'
import { sql } from '../../src/db/kysely.js'
import t from 'tap'
import { removeOldHistory } from '../../src/scheduler/remove-old-history.js'
import { DAY } from '../helpers/clock.js'
import { waitForLockWait } from '../helpers/database.js'
import { setupRuntime } from '../helpers/runtime.js'

// Finished data older than the retention goes, in batches; open processes and recent history stay.
const rt = await setupRuntime(t)
const count = async (table: 'process_instances' | 'instance_steps' | 'deliveries' | 'delivery_attempts' | 'activities' | 'outbox_mails') =>
  (await sql<{ n: number }>`select count(*)::int as n from ${sql.table(table)}`.execute(rt.db)).rows[0]!.n

t.test('processes that ended long ago go with their steps, deliveries, attempts and activities; the rest stays', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Re-value', refersTo: { property: true } }], { notifyOnCompletion: true })
  const task = await rt.template([{ kind: 'task', name: 'Still open' }])
  const old = []
  for (let i = 0; i < 5; i++) old.push(await rt.start(templateId))
  await rt.scheduler.runOnce()
  const open = await rt.start(task)
  const propertyUpdate = await rt.api.patch(`/v1/properties/${rt.propertyId}`, { fields: { price: 1 } })
  t.equal(propertyUpdate.statusCode, 200)
  const before = { instances: await count('process_instances'), activities: await count('activities'), mails: await count('outbox_mails') }
  t.equal((await sql<{ n: number }>`select count(*)::int as n from process_instances where status = 'completed'`.execute(rt.db)).rows[0]!.n, 5)

  t.equal(await removeOldHistory(rt.db, rt.clock.now(), 90), 0, 'nothing is old yet')
  t.equal(await removeOldHistory(rt.db, new Date(rt.clock.now().getTime() + 100 * DAY), 0), 0, 'a retention of 0 keeps all')

  const later = new Date(rt.clock.now().getTime() + 91 * DAY)
  let removed = 0
  for (let pass = await removeOldHistory(rt.db, later, 90, 2); pass > 0; pass = await removeOldHistory(rt.db, later, 90, 2)) removed += pass
  t.equal(removed, 5 + 5, 'five processes and their five completion mails, two of each per call')
  t.equal(await count('process_instances'), before.instances - 5, 'the finished processes are gone')
  t.equal(await count('deliveries'), 0, 'their deliveries too')
  t.equal(await count('delivery_attempts'), 0, 'and the attempts')
  const left = await rt.db.selectFrom('activities').select(['instance_id']).execute()
  t.ok(left.every((a) => a.instance_id === null || a.instance_id === open.id), 'only the open process\'s and the record\'s own activities remain')
  t.equal((await rt.instance(open.id)).status, 'running', 'the open process is untouched')
  t.equal(await count('outbox_mails'), before.mails - 5)
})

// A delivery of a process that ended long ago may be replayed (POST /v1/deliveries/{id}/replay answers
// 202): the retention took the process with it, the replay queued or in flight, and the call was never
// made, or made and its attempt never logged.
t.test('a process that ended long ago stays while a replay of its delivery is queued or in flight, and goes once it has finished', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Re-value again', refersTo: { property: true } }])
  const ended = await rt.start(templateId)
  await rt.scheduler.runOnce()
  t.equal((await rt.instance(ended.id)).status, 'completed')
  const deliveryId = ended.steps[0].delivery.id as string
  rt.clock.advance(91 * DAY)
  const removeAll = async () => {
    let removed = 0
    for (let pass = await removeOldHistory(rt.db, rt.clock.now(), 90); pass > 0; pass = await removeOldHistory(rt.db, rt.clock.now(), 90)) removed += pass
    return removed
  }

  const replayed = await rt.api.post(`/v1/deliveries/${deliveryId}/replay`)
  t.equal(replayed.statusCode, 202, replayed.body)
  await removeAll()
  const queued = (await rt.api.get(`/v1/deliveries/${deliveryId}`)).data
  if (!t.match(queued, { status: 'pending', round: 2 }, 'the queued replay stays, with its process')) return

  // In flight: the provider holds its answer while the retention runs.
  let answer!: () => void
  let arrived!: () => void
  const held = new Promise<void>((resolve) => { arrived = resolve })
  rt.provider.queue(() => new Promise((resolve) => {
    arrived()
    answer = () => resolve({ status: 200, body: 'again' })
  }))
  const calls = rt.provider.calls.length
  const run = rt.scheduler.runOnce()
  await held
  await removeAll()
  answer()
  await run
  t.equal(rt.provider.calls.length, calls + 1, 'the replay called the provider')
  const delivery = (await rt.api.get(`/v1/deliveries/${deliveryId}`)).data
  t.match(delivery, { status: 'succeeded', round: 2 }, 'its outcome is recorded')
  t.same(delivery.attempts.map((a: { round: number; outcome: string }) => [a.round, a.outcome]), [[1, 'succeeded'], [2, 'succeeded']], 'both rounds in the attempt log')

  t.ok(await removeAll() > 0, 'once the replay has finished, the process goes')
  t.equal((await rt.api.get(`/v1/deliveries/${deliveryId}`)).statusCode, 404)
})

// The retention locks the processes it removes, then removes those still without a queued delivery in a
// second statement. A replay coming in between answered 202, and the removal then took its delivery.
t.test('a replay of a delivery whose process the retention holds waits for it, and finds nothing once it is removed', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Re-value once more', refersTo: { property: true } }])
  const ended = await rt.start(templateId)
  await rt.scheduler.runOnce()
  t.equal((await rt.instance(ended.id)).status, 'completed')
  const deliveryId = ended.steps[0].delivery.id as string
  let remove!: () => void
  let held!: () => void
  const removing = new Promise<void>((resolve) => { remove = resolve })
  const holding = new Promise<void>((resolve) => { held = resolve })
  const retention = rt.db.transaction().execute(async (trx) => {
    await sql`select 1 from process_instances where id = ${ended.id} for update`.execute(trx)
    held()
    await removing
    await sql`delete from activities where instance_id = ${ended.id}`.execute(trx)
    await sql`delete from process_instances where id = ${ended.id}`.execute(trx)
  })
  await holding
  const replaying = rt.api.post(`/v1/deliveries/${deliveryId}/replay`)
  t.ok(await waitForLockWait(rt.db).then(() => true, () => false), 'the replay waits for the process the retention holds')
  remove()
  await retention
  const replayed = await replaying
  t.equal(replayed.statusCode, 404, 'and finds no delivery once the process is gone, rather than answering 202 for one the removal takes')
  t.equal((await rt.api.get(`/v1/deliveries/${deliveryId}`)).statusCode, 404)
})

// A provider may write back with the apiClaim of a replayed call for a while after the call, when its
// process, ended long ago, is the retention's to remove. The write-back read the call's process before the
// removal committed and logged its activity under it: an activity of no process, which no pass removes.
t.test('a write-back with the claim of a call whose process the retention is removing logs no activity under the removed process', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Re-value and write back', refersTo: { property: true } }])
  const ended = await rt.start(templateId)
  await rt.scheduler.runOnce()
  t.equal((await rt.instance(ended.id)).status, 'completed')
  const deliveryId = ended.steps[0].delivery.id as string
  rt.clock.advance(91 * DAY)
  t.equal((await rt.api.post(`/v1/deliveries/${deliveryId}/replay`)).statusCode, 202)
  const calls = rt.provider.calls.length
  await rt.scheduler.runOnce()
  const claim = rt.provider.calls[calls]?.query.apiClaim
  if (!t.ok(claim, 'the replay called the provider with a claim')) return

  // The removal waits on a step of the process that a test transaction holds, its own locks taken.
  let release!: () => void
  let held!: () => void
  const releasing = new Promise<void>((resolve) => { release = resolve })
  const holding = new Promise<void>((resolve) => { held = resolve })
  const hold = rt.db.transaction().execute(async (trx) => {
    await sql`select 1 from instance_steps where instance_id = ${ended.id} for key share`.execute(trx)
    held()
    await releasing
  })
  await holding
  const retention = removeOldHistory(rt.db, rt.clock.now(), 90)
  await waitForLockWait(rt.db)
  const writing = rt.as(claim!).patch(`/v1/properties/${rt.propertyId}`, { fields: { valuedAgain: true } })
  await Promise.race([writing, waitForLockWait(rt.db, 2)])
  release()
  await hold
  t.ok(await retention > 0)
  const written = await writing
  t.equal(written.statusCode, 200, written.body)
  t.equal((await rt.api.get(`/v1/process-instances/${ended.id}`)).statusCode, 404, 'the process is gone')
  const left = (await sql<{ instance_id: string | null }>`select instance_id from activities
    where kind = 'recordUpdatedByService' and data->>'deliveryId' = ${deliveryId}`.execute(rt.db)).rows
  t.same(left, [{ instance_id: null }], 'the write-back is on the record\'s log, bound to no process, and goes at the retention')
})

// A follow-up step that waits for its process ends once the scheduler sees the child ended. After a
// downtime longer than the retention (or a retention pass that came first), the child went before its
// parent's step heard of it, and the step waited for a process that no longer existed, for good.
t.test('a process whose parent\'s follow-up step still waits for it stays, however long ago it ended, until the step has heard of it', async (t) => {
  const child = await rt.template([{ kind: 'task', name: 'Hand over the keys' }])
  const parent = await rt.template([
    { kind: 'followUpProcess', name: 'Wait for the handover', followUp: { templateId: child, waitForCompletion: true } },
    { kind: 'task', name: 'Archive' }
  ])
  const started = await rt.start(parent)
  await rt.scheduler.runOnce()
  const kids = (await rt.api.get(`/v1/process-instances?parentId=${started.id}`)).data.items as { id: string }[]
  if (!t.equal(kids.length, 1, 'the follow-up started its process')) return
  const kid = kids[0]!
  t.equal((await rt.api.post(`/v1/process-instances/${kid.id}/advance`, { outcome: 'done' })).statusCode, 200)
  t.equal((await rt.instance(kid.id)).status, 'completed')

  // No pass of the scheduler until the retention is past: the retention comes first.
  rt.clock.advance(91 * DAY)
  while ((await removeOldHistory(rt.db, rt.clock.now(), 90)) > 0);
  t.equal((await rt.api.get(`/v1/process-instances/${kid.id}`)).statusCode, 200, 'the child stays while its parent\'s step waits for it')
  await rt.scheduler.runOnce()
  t.match((await rt.instance(started.id)).steps.map((s: { state: string }) => s.state), ['done', 'due'], 'the step heard that it completed, and the parent went on')
  while ((await removeOldHistory(rt.db, rt.clock.now(), 90)) > 0);
  t.equal((await rt.api.get(`/v1/process-instances/${kid.id}`)).statusCode, 404, 'then the child goes')
})

// A start's Idempotency-Key is kept on its process (process_instances.idempotency_key), so it holds as
// long as the process does: the README says a repeat past the retention starts a new process.
t.test('a start\'s Idempotency-Key holds while its process is kept, however old, and goes with it', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Keyed' }])
  const start = () => rt.api.post('/v1/process-instances', { templateId, responsibleUserId: rt.worker.id, propertyId: rt.propertyId }, { 'idempotency-key': 'retention:start' })
  const first = await start()
  t.equal(first.statusCode, 201, first.body)
  rt.clock.advance(200 * DAY)
  while ((await removeOldHistory(rt.db, rt.clock.now(), 90)) > 0);
  const running = await start()
  t.match([running.statusCode, running.headers['idempotent-replayed'], running.data.id], [200, 'true', first.data.id], 'a running process keeps its key, however old')
  t.equal((await rt.api.post(`/v1/process-instances/${first.data.id}/cancel`, {})).statusCode, 200)
  rt.clock.advance(90 * DAY)
  while ((await removeOldHistory(rt.db, rt.clock.now(), 90)) > 0);
  const ended = await start()
  t.match([ended.statusCode, ended.data.id], [200, first.data.id], 'an ended one too, until the retention')
  rt.clock.advance(1)
  while ((await removeOldHistory(rt.db, rt.clock.now(), 90)) > 0);
  const again = await start()
  t.equal(again.statusCode, 201, 'once the process is removed, the same key starts a new one')
  t.not(again.data.id, first.data.id)
})

// A template has up to a thousand steps, and one statement removed 500 processes with all of theirs:
// over the statement timeout, it was cancelled on every pass, which picked the same oldest ones again,
// and nothing went any more. Here a statement timeout of 200 ms, and 80 processes of 300 steps (each
// with a delivery, an attempt and two activities) that take a second together and 10–20 ms each.
t.test('processes too large to go in one statement go in removals within the statement timeout, however many steps they have', async (t) => {
  const rt = await setupRuntime(t)
  const templateId = await rt.template([{ kind: 'webhook', name: 'Re-value', refersTo: { property: true } }])
  const ended = await rt.start(templateId)
  await rt.scheduler.runOnce()
  t.equal((await rt.instance(ended.id)).status, 'completed')
  for (let chunk = 0; chunk < 4; chunk++) {
    await sql`
      with p as (
        insert into process_instances (tenant_id, id, template_id, template_name, status, responsible_user_id, controller_user_id, property_id, started_at, ended_at)
        select tenant_id, gen_random_uuid(), template_id, template_name, 'completed', responsible_user_id, controller_user_id, property_id, started_at, ended_at
        from process_instances, generate_series(1, 20) where id = ${ended.id}
        returning tenant_id, id
      ), s as (
        insert into instance_steps (tenant_id, id, instance_id, position, kind, name, start_mode, responsibility, refers_to_property, refers_to_address, state, service_id)
        select p.tenant_id, gen_random_uuid(), p.id, n, 'webhook', 'Re-value', 'afterPrevious', 'processResponsible', true, false, 'done', ${rt.serviceId}
        from p, generate_series(1, 300) n
        returning tenant_id, id, instance_id
      ), d as (
        insert into deliveries (tenant_id, id, service_id, source, instance_id, step_id, status, finished_at)
        select tenant_id, gen_random_uuid(), ${rt.serviceId}, 'step', instance_id, id, 'succeeded', ${rt.clock.now()} from s
        returning tenant_id, id, instance_id, step_id
      ), a as (
        insert into delivery_attempts (tenant_id, id, delivery_id, round, attempt_number, started_at, duration_ms, outcome)
        select tenant_id, gen_random_uuid(), id, 1, 1, ${rt.clock.now()}, 10, 'succeeded' from d
      )
      insert into activities (tenant_id, id, instance_id, step_id, kind, message)
      select tenant_id, gen_random_uuid(), instance_id, step_id, kind, 'Re-valued' from d, unnest(array['webhookStarted', 'webhookSucceeded']) kind
    `.execute(rt.db)
  }
  t.equal(await count('instance_steps'), 80 * 300 + 1)
  const short = openPostgres(rt.databaseUrl, { statementTimeoutMs: 200 })
  t.teardown(() => short.close())

  const later = new Date(rt.clock.now().getTime() + 91 * DAY)
  await removeOldHistory(short.db, later, 90, 500, AbortSignal.abort())
  t.equal(await count('process_instances'), 81, 'a stopping scheduler\'s pass takes no process')
  const failed: unknown[] = []
  let removed = 0
  for (let pass = 0; pass < 5; pass++) {
    const n = await removeOldHistory(short.db, later, 90).catch((error: unknown) => { failed.push(error); return -1 })
    if (n === 0) break
    removed += Math.max(n, 0)
  }
  t.same(failed.map((e) => (e as { message?: string }).message), [], 'no pass failed: each statement within the timeout')
  t.equal(removed, 81, 'every process went')
  t.same([await count('process_instances'), await count('instance_steps'), await count('deliveries'), await count('delivery_attempts')], [0, 0, 0, 0], 'with its steps, deliveries and attempts')
  t.equal((await sql<{ n: number }>`select count(*)::int as n from activities where instance_id is not null`.execute(rt.db)).rows[0]!.n, 0, 'and activities')

  async function count(table: 'process_instances' | 'instance_steps' | 'deliveries' | 'delivery_attempts') {
    return (await sql<{ n: number }>`select count(*)::int as n from ${sql.table(table)}`.execute(rt.db)).rows[0]!.n
  }
})

t.test('a sent mail whose email step has not heard of it yet stays, however old', async (t) => {
  const sent = rt.clock.now()
  await sql`insert into outbox_mails (tenant_id, id, dedupe_key, kind, to_address, subject, body, sent_at, settle_step)
    values (${rt.tenant.id}, gen_random_uuid(), 'retention:unsettled', 'emailStep', 'clara@example.com', 'Unsettled', 'x', ${sent}, true),
           (${rt.tenant.id}, gen_random_uuid(), 'retention:settled', 'emailStep', 'clara@example.com', 'Settled', 'x', ${sent}, false)`.execute(rt.db)
  const later = new Date(sent.getTime() + 91 * DAY)
  while ((await removeOldHistory(rt.db, later, 90)) > 0);
  const left = (await sql<{ subject: string }>`select subject from outbox_mails where dedupe_key like 'retention:%'`.execute(rt.db)).rows
  t.same(left.map((m) => m.subject), ['Unsettled'], 'the settled one goes, the unsettled one stays for its step')
})

t.test('a record trigger\'s finished deliveries go with the record\'s activities that no process holds; newer ones stay', async (t) => {
  const rt = await setupRuntime(t)
  const trigger = await rt.operator.post(`/v1/marketplace-services/${rt.serviceId}/triggers`, { module: 'property', events: ['update'] })
  t.equal(trigger.statusCode, 201, trigger.body)
  const activitiesOfProperty = async () => (await rt.api.get(`/v1/properties/${rt.propertyId}/activities`)).data.items as { kind: string; message: string }[]
  t.equal((await rt.api.patch(`/v1/properties/${rt.propertyId}`, { fields: { price: 1 } })).statusCode, 200)
  await rt.scheduler.runOnce()
  t.match(await activitiesOfProperty(), [{ kind: 'webhookSucceeded' }], 'the call\'s outcome is on the record\'s log')

  rt.clock.advance(60 * DAY)
  t.equal((await rt.api.patch(`/v1/properties/${rt.propertyId}`, { fields: { price: 2 } })).statusCode, 200)
  await rt.scheduler.runOnce()
  t.equal((await activitiesOfProperty()).length, 2)

  const later = new Date(rt.clock.now().getTime() + 31 * DAY)
  let removed = 0
  for (let pass = await removeOldHistory(rt.db, later, 90, 1); pass > 0; pass = await removeOldHistory(rt.db, later, 90, 1)) removed += pass
  t.equal(removed, 2, 'the first delivery and its activity, one of each per call')
  t.equal(await count('deliveries'), 1, 'the second delivery stays')
  const left = await activitiesOfProperty()
  t.equal(left.length, 1)
  t.match(left, [{ kind: 'webhookSucceeded', message: /HTTP 200/ }], 'its activity stays with it')
  const kept = (await rt.db.selectFrom('deliveries').select('id').executeTakeFirstOrThrow()).id
  t.equal((await rt.db.selectFrom('activities').select('data').where('instance_id', 'is', null).executeTakeFirstOrThrow()).data.deliveryId, kept)

  async function count(table: 'deliveries') {
    return (await sql<{ n: number }>`select count(*)::int as n from ${sql.table(table)}`.execute(rt.db)).rows[0]!.n
  }
})

t.test('an autostart run goes once nothing can look for it again: a record\'s creation or version at once, a date once no offset or catch-up reaches it', async (t) => {
  const rt = await setupRuntime(t)
  const api = rt.api
  const runsOf = async (templateId: string) =>
    ((await api.get(`/v1/process-templates/${templateId}/autostart-runs?limit=200`)).data.items as { occurrence: string; outcome: string }[]).map((r) => r.occurrence).sort()
  const newTemplate = async (name: string, autostart: Record<string, unknown>) => {
    const created = await api.post('/v1/process-templates', { name, controllerUserId: rt.controller.id, autostart })
    t.equal(created.statusCode, 201, created.body)
    await api.post(`/v1/process-templates/${created.data.id}/steps`, { kind: 'task', name: 'Call them', refersTo: { address: true } })
    t.equal((await api.patch(`/v1/process-templates/${created.data.id}`, { active: true })).statusCode, 200)
    return created.data.id as string
  }
  const removeAll = async (at: string) => {
    let removed = 0
    for (let pass = await removeOldHistory(rt.db, new Date(at), 90); pass > 0; pass = await removeOldHistory(rt.db, new Date(at), 90)) removed += pass
    return removed
  }

  rt.clock.set('2029-05-10T06:00:00Z')
  const created = await newTemplate('Welcome', { on: 'recordCreated', record: 'address', responsible: 'maintainer' })
  const changed = await newTemplate('Moved', { on: 'fieldChanged', record: 'address', field: 'city', responsible: 'maintainer' })
  const birthday = await newTemplate('Birthday', { on: 'dateReached', record: 'address', field: 'born', ignoreYear: true, responsible: 'maintainer' })
  const address = (await api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { city: 'Bonn', born: '1980-05-10' } })).data.id as string
  t.equal((await api.patch(`/v1/addresses/${address}`, { fields: { city: 'Köln' } })).statusCode, 200)
  t.equal((await rt.scheduler.runOnce()).autostarts, 1, 'the birthday today')
  t.same([await runsOf(created), await runsOf(changed), await runsOf(birthday)], [['created'], ['changed:2'], ['date:2029-05-10']])

  // The birthday template comes to start a year after the date: on 2030-05-11 it looks for 2029-05-10 again.
  rt.clock.set('2029-08-20T06:00:00Z')
  await removeAll('2029-08-20T06:00:00Z')
  t.same([await runsOf(created), await runsOf(changed)], [[], []], 'a creation and a record version never come again: their runs go after the retention')
  t.same(await runsOf(birthday), ['date:2029-05-10'], 'a date run stays past the retention')
  t.equal((await api.patch(`/v1/process-templates/${birthday}`, { autostart: { on: 'dateReached', record: 'address', field: 'born', ignoreYear: true, daysOffset: 366, responsible: 'maintainer' } })).statusCode, 200)
  rt.clock.set('2030-05-11T06:00:00Z')
  await removeAll('2030-05-11T06:00:00Z')
  t.equal((await rt.newScheduler().runOnce()).autostarts, 0, 'the date\'s run is still there: nothing starts for it twice')
  t.same(await runsOf(birthday), ['date:2029-05-10'])

  // The widest offset (366 days) and the catch-up (31) past, and a day each for time zones and clocks.
  await removeAll('2030-06-13T23:00:00Z')
  t.same(await runsOf(birthday), ['date:2029-05-10'], 'still within reach of a late pass')
  await removeAll('2030-06-14T01:00:00Z')
  t.same(await runsOf(birthday), [], 'past every pass that could look for it')
})
