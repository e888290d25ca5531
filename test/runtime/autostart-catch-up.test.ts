import t, { type Test } from 'tap'
import { sql } from '../../src/db/kysely.js'
import { autostartOnDates, daysAfter } from '../../src/modules/autostart/service.js'
import { DATE_CATCH_UP_DAYS } from '../../src/modules/autostart/schemas.js'
import { waitForLockWait } from '../helpers/database.js'
import { setupRuntime } from '../helpers/runtime.js'

// A dateReached autostart catches up the days on which no worker ran (docs/architecture.md, Autostart):
// each such day's records start late, once, with an activity that says so; a template never starts
// for the days before it began watching, nor for those while it was inactive; a day is checked again
// on the next day, for records written after its last pass; at most DATE_CATCH_UP_DAYS back.

t.test('the days a pass checks', async (t) => {
  t.same(daysAfter('2029-02-27', '2029-03-01'), ['2029-02-28', '2029-03-01'])
  t.same(daysAfter('2028-02-28', '2028-03-01'), ['2028-02-29', '2028-03-01'], 'a leap day')
  t.same(daysAfter('2029-12-31', '2030-01-01'), ['2030-01-01'], 'across the new year')
  t.same(daysAfter('2029-03-01', '2029-03-01'), ['2029-03-01'], 'checked through today: today again')
  t.same(daysAfter('2029-03-05', '2029-03-01'), ['2029-03-01'], 'a date ahead of today: today alone')
})

t.test('dateReached catches up missed days', async (t) => {
  const rt = await setupRuntime(t)
  const api = rt.api
  // A chore that fails is logged and counted as nothing started: each pass checks that none did.
  const failures: unknown[] = []
  const log = { info() {}, warn() {}, error: (fields: unknown) => { failures.push(fields) } }
  const onError = (error: unknown) => { failures.push(error) }
  t.afterEach(() => { t.same(failures, [], 'no chore failed') })
  // Every pass in a scheduler of its own: a worker checks dates at most every ten minutes.
  const pass = async (at: string) => {
    rt.clock.set(at)
    return (await rt.newScheduler({}, log).runOnce()).autostarts
  }
  const newAddress = async (fields: Record<string, unknown>) =>
    (await api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields })).data.id as string
  const handoverOn = (date: string) => newAddress({ handoverOn: date })
  const runsOf = async (templateId: string) => {
    const runs = (await api.get(`/v1/process-templates/${templateId}/autostart-runs?limit=200`)).data.items as { recordId: string; occurrence: string; outcome: string }[]
    return new Map(runs.map((r) => [r.recordId, r]))
  }
  const checkedThrough = async (templateId: string) => (await sql<{ d: string | null }>`
    select to_char(dates_checked_through, 'YYYY-MM-DD') as d from process_templates where id = ${templateId}`.execute(rt.db)).rows[0]?.d
  const setCheckedThrough = (templateId: string, date: string | null) =>
    sql`update process_templates set dates_checked_through = ${date}::date where id = ${templateId}`.execute(rt.db)
  const newTemplate = async (name: string, autostart: Record<string, unknown>) => {
    const created = await api.post('/v1/process-templates', { name, controllerUserId: rt.controller.id, autostart })
    await api.post(`/v1/process-templates/${created.data.id}/steps`, { kind: 'task', name: 'Hand over the keys', refersTo: { address: true } })
    return created.data.id as string
  }
  const patch = async (templateId: string, body: Record<string, unknown>) => {
    const response = await api.patch(`/v1/process-templates/${templateId}`, body)
    t.equal(response.statusCode, 200, response.body)
  }

  rt.clock.set('2029-05-10T06:00:00Z') // 08:00 in Berlin
  const templateId = await newTemplate('Handover', { on: 'dateReached', record: 'address', field: 'handoverOn', responsible: 'maintainer' })
  await patch(templateId, { active: true })
  t.equal(await checkedThrough(templateId), '2029-05-09', 'a template activated today watches from today')

  const before = await handoverOn('2029-05-09')
  const today = await handoverOn('2029-05-10')
  const missed = [await handoverOn('2029-05-11'), await handoverOn('2029-05-12')]
  const later = await handoverOn('2029-05-13')

  await t.test('a template starts nothing for the days before it watched them', async (t) => {
    t.equal(await pass('2029-05-10T08:00:00Z'), 1)
    const runs = await runsOf(templateId)
    t.match(runs.get(today), { occurrence: 'date:2029-05-10', outcome: 'started' })
    t.notOk(runs.has(before), 'yesterday\'s date, before the activation')
  })

  await t.test('days on which no worker ran start late, each record once, saying so', async (t) => {
    // No worker on 11 and 12 May; two run again on the 13th.
    const [a, b] = await Promise.all([pass('2029-05-13T05:00:00Z'), rt.newScheduler({}, log).runOnce()])
    t.equal(a + b.autostarts, 3, 'two missed days and today, started once across two workers')
    const runs = await runsOf(templateId)
    t.match(runs.get(missed[0]!), { occurrence: 'date:2029-05-11', outcome: 'started' })
    t.match(runs.get(missed[1]!), { occurrence: 'date:2029-05-12', outcome: 'started' })
    t.match(runs.get(later), { occurrence: 'date:2029-05-13', outcome: 'started' })
    t.equal(runs.size, 4)
    const activities = (await api.get(`/v1/addresses/${missed[0]}/activities`)).data.items as { kind: string; message: string }[]
    t.ok(activities.some((a) => a.kind === 'processStarted'
      && a.message.includes('as the address\'s handoverOn 2029-05-11 was reached on 2029-05-11 (checked late, on 2029-05-13)')), JSON.stringify(activities))
    t.equal(await checkedThrough(templateId), '2029-05-12', 'whole through yesterday')
    t.equal(await pass('2029-05-13T06:00:00Z'), 0, 'a later pass the same day starts nothing again')
  })

  await t.test('a record written after its day\'s last pass starts the next day', async (t) => {
    t.equal(await pass('2029-05-13T21:50:00Z'), 0) // 23:50 in Berlin: the day's last pass
    rt.clock.set('2029-05-13T21:55:00Z')
    const lateEntry = await handoverOn('2029-05-13')
    t.equal(await pass('2029-05-14T04:00:00Z'), 1)
    t.match((await runsOf(templateId)).get(lateEntry), { occurrence: 'date:2029-05-13', outcome: 'started' })
    t.equal(await checkedThrough(templateId), '2029-05-13')
  })

  await t.test('the days a template was inactive are not caught up', async (t) => {
    rt.clock.set('2029-05-14T10:00:00Z')
    await patch(templateId, { active: false })
    const whileOff = await handoverOn('2029-05-17')
    rt.clock.set('2029-05-20T10:00:00Z')
    await patch(templateId, { active: true })
    t.equal(await checkedThrough(templateId), '2029-05-19')
    t.equal(await pass('2029-05-20T11:00:00Z'), 0)
    t.equal(await pass('2029-05-21T11:00:00Z'), 0)
    t.notOk((await runsOf(templateId)).has(whileOff))
  })

  await t.test('watching other dates starts anew; another responsible user does not', async (t) => {
    await setCheckedThrough(templateId, '2029-05-15')
    await patch(templateId, { autostart: { on: 'dateReached', record: 'address', field: 'handoverOn', daysOffset: 0, responsible: { user: rt.worker.id } } })
    t.equal(await checkedThrough(templateId), '2029-05-15', 'the same dates, the offset written out, another responsible user')
    await patch(templateId, { name: 'Handover', autostart: { responsible: 'maintainer', ignoreYear: false, field: 'handoverOn', record: 'address', on: 'dateReached' } })
    t.equal(await checkedThrough(templateId), '2029-05-15', 'the same setting in another order')
    await patch(templateId, { autostart: { on: 'dateReached', record: 'address', field: 'handoverOn', daysOffset: -1, responsible: 'maintainer' } })
    t.equal(await checkedThrough(templateId), '2029-05-20', 'another offset')
    await setCheckedThrough(templateId, '2029-05-15')
    await patch(templateId, { autostart: { on: 'dateReached', record: 'address', field: 'handoverOn', responsible: 'maintainer' } })
    t.equal(await checkedThrough(templateId), '2029-05-20', 'and back')
  })

  await t.test(`at most ${DATE_CATCH_UP_DAYS} days back`, async (t) => {
    t.equal(await pass('2029-05-21T12:00:00Z'), 0)
    const tooOld = await handoverOn('2029-06-09')
    const oldest = await handoverOn('2029-06-10')
    t.equal(await pass('2029-07-11T10:00:00Z'), 1) // 31 days after 10 June, 32 after the 9th
    const runs = await runsOf(templateId)
    t.ok(runs.has(oldest))
    t.notOk(runs.has(tooOld), 'given up')
    t.equal(await checkedThrough(templateId), '2029-07-10')
  })

  await t.test('a missed day with a record a write holds is checked again until it is started', async (t) => {
    const held = await handoverOn('2029-07-12')
    const free = await handoverOn('2029-07-13')
    let release: () => void = () => {}
    const releasing = new Promise<void>((resolve) => (release = resolve))
    let locked: () => void = () => {}
    const isLocked = new Promise<void>((resolve) => (locked = resolve))
    const writer = rt.db.transaction().execute(async (trx) => {
      await trx.selectFrom('addresses').select('id').where('id', '=', held).forUpdate().execute()
      locked()
      await releasing
    })
    await isLocked
    t.equal(await pass('2029-07-14T10:00:00Z'), 1, 'the free record starts, the held one is passed by')
    t.equal(await checkedThrough(templateId), '2029-07-11', 'the held record\'s day is not whole')
    release()
    await writer
    t.equal(await pass('2029-07-14T10:20:00Z'), 1)
    const runs = await runsOf(templateId)
    t.match(runs.get(held), { occurrence: 'date:2029-07-12', outcome: 'started' })
    t.ok(runs.has(free))
    t.equal(await checkedThrough(templateId), '2029-07-13')
  })

  await t.test('a pass claims at most its batch; the next pass goes on where it stopped', async (t) => {
    const ids = [await handoverOn('2029-07-15'), await handoverOn('2029-07-15'), await handoverOn('2029-07-16'), await handoverOn('2029-07-17')]
    rt.clock.set('2029-07-18T10:00:00Z')
    // The chore alone: a scheduler's pass runs it again at once while it claims.
    t.equal(await autostartOnDates(rt.db, rt.clock.now(), 2, onError), 2)
    t.equal(await checkedThrough(templateId), '2029-07-15')
    t.equal(await autostartOnDates(rt.db, rt.clock.now(), 2, onError), 2)
    t.equal(await checkedThrough(templateId), '2029-07-17')
    t.equal(await autostartOnDates(rt.db, rt.clock.now(), 2, onError), 0)
    const runs = await runsOf(templateId)
    t.same(ids.map((id) => runs.get(id)?.outcome), ['started', 'started', 'started', 'started'])
  })

  await t.test('a date ahead of today, from a worker whose clock ran ahead, is checked again from yesterday', async (t) => {
    t.equal(await autostartOnDates(rt.db, new Date('2029-07-25T10:00:00Z'), 100, onError), 0)
    t.equal(await checkedThrough(templateId), '2029-07-24')
    const missedDay = await handoverOn('2029-07-19')
    t.equal(await pass('2029-07-19T10:00:00Z'), 1, 'today is checked')
    t.equal(await checkedThrough(templateId), '2029-07-18')
    const nextMissed = await handoverOn('2029-07-20')
    t.equal(await pass('2029-07-22T10:00:00Z'), 1)
    const runs = await runsOf(templateId)
    t.ok(runs.has(missedDay))
    t.match(runs.get(nextMissed), { occurrence: 'date:2029-07-20', outcome: 'started' })
    t.equal(await checkedThrough(templateId), '2029-07-21')
  })

  await t.test('a change of the template during a pass: the pass waits for it and leaves its dates to the next pass', async (t) => {
    const keysOn = await newAddress({ keysOn: '2029-07-22' })
    // The template changes to watch keysOn, committed only once the pass of the next day waits for it.
    let commit: () => void = () => {}
    const committing = new Promise<void>((resolve) => (commit = resolve))
    let changed: () => void = () => {}
    const isChanged = new Promise<void>((resolve) => (changed = resolve))
    const change = rt.db.transaction().execute(async (trx) => {
      await sql`select 1 from process_templates where id = ${templateId} for update`.execute(trx)
      await sql`update process_templates set version = version + 1, dates_checked_through = '2029-07-21',
        autostart = ${JSON.stringify({ on: 'dateReached', record: 'address', field: 'keysOn', responsible: 'maintainer' })}::jsonb
        where id = ${templateId}`.execute(trx)
      changed()
      await committing
    })
    await isChanged
    // 01:01 on 23 July in Berlin: the 22nd is whole, and the pass that marks it so waits for the change.
    const racing = autostartOnDates(rt.db, new Date('2029-07-22T23:01:00Z'), 100, onError)
    await waitForLockWait(rt.db)
    commit()
    await change
    t.equal(await racing, 0, 'nothing started with the old setting')
    t.equal(await checkedThrough(templateId), '2029-07-21', 'the change\'s date stands')
    t.equal(await autostartOnDates(rt.db, new Date('2029-07-22T23:11:00Z'), 100, onError), 1, 'the next pass checks the 22nd with the new setting')
    t.match((await runsOf(templateId)).get(keysOn), { occurrence: 'date:2029-07-22', outcome: 'started' })
  })

  await t.test('a template from before the upgrade begins with yesterday; ignoreYear and an offset catch up too', async (t) => {
    rt.clock.set('2029-11-30T10:00:00Z')
    const birthdays = await newTemplate('Birthday', { on: 'dateReached', record: 'address', field: 'birthday', ignoreYear: true, daysOffset: -2, responsible: 'maintainer' })
    await patch(birthdays, { active: true })
    await setCheckedThrough(birthdays, null)
    const early = await newAddress({ birthday: '1980-12-01' }) // two days from 29 November: before the upgrade's yesterday
    const leap = await newAddress({ birthday: '1984-02-29' })
    const lateOnes = [await newAddress({ birthday: '1990-12-03' }), await newAddress({ birthday: '1975-12-04' })]
    t.equal(await pass('2029-11-30T11:00:00Z'), 0)
    t.equal(await checkedThrough(birthdays), '2029-11-29')
    t.equal(await pass('2029-12-02T11:00:00Z'), 2, 'the 1st, missed, and the 2nd')
    let runs = await runsOf(birthdays)
    t.notOk(runs.has(early))
    t.match(runs.get(lateOnes[0]!), { occurrence: 'date:2029-12-03' })
    t.match(runs.get(lateOnes[1]!), { occurrence: 'date:2029-12-04' })
    const activities = (await api.get(`/v1/addresses/${lateOnes[0]}/activities`)).data.items as { message: string }[]
    t.ok(activities.some((a) => a.message.includes('birthday 12-03 (every year) was 2 day(s) away on 2029-12-01 (checked late, on 2029-12-02)')),
      JSON.stringify(activities))
    // 29 February falls on the 28th in a common year: a missed 26 February starts it.
    t.equal(await pass('2030-02-27T11:00:00Z'), 1)
    runs = await runsOf(birthdays)
    t.match(runs.get(leap), { occurrence: 'date:2030-02-28', outcome: 'started' })
  })
})

t.test('a tenant\'s dates are read with Intl, whatever name its zone has; one that cannot be read fails only its own templates', async (t) => {
  const rt = await setupRuntime(t)
  const dateTemplate = async (client: typeof rt.api, controllerUserId: string) => {
    const created = await client.post('/v1/process-templates',
      { name: 'Handover', controllerUserId, autostart: { on: 'dateReached', record: 'address', field: 'handoverOn', responsible: 'maintainer' } })
    await client.post(`/v1/process-templates/${created.data.id}/steps`, { kind: 'task', name: 'Hand over the keys', refersTo: { address: true } })
    const activated = await client.patch(`/v1/process-templates/${created.data.id}`, { active: true })
    t.equal(activated.statusCode, 200, activated.body)
    return created.data.id as string
  }
  const checkedThrough = async (templateId: string) => (await sql<{ d: string }>`
    select to_char(dates_checked_through, 'YYYY-MM-DD') as d from process_templates where id = ${templateId}`.execute(rt.db)).rows[0]!.d
  // 15:00 UTC on 10 May is 1:00 on 11 May in Sydney.
  rt.clock.set('2029-05-10T15:00:00Z')
  const other = await rt.newTenant()
  // A name Intl takes (for Australia/Sydney) that Postgres does not know: activating a date template answered 500.
  // The API refuses it now (ICU's own id, not the zone database's); a tenant may still hold it from before.
  await sql`update tenants set time_zone = 'AET' where id = ${other.id}`.execute(rt.db)
  const otherUser = (await other.client.post('/v1/users', { name: 'Olga Other', email: 'olga@example.com' })).data.id as string
  const sydney = await dateTemplate(other.client, otherUser)
  t.equal(await checkedThrough(sydney), '2029-05-10', 'it watches from its own today, 11 May')
  await other.client.post('/v1/addresses', { maintainerUserId: otherUser, fields: { handoverOn: '2029-05-11' } })
  const berlin = await dateTemplate(rt.api, rt.controller.id)
  t.equal(await checkedThrough(berlin), '2029-05-09', 'and Berlin from 10 May')
  await rt.api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { handoverOn: '2029-05-10' } })
  const noErrors = (error: unknown) => { t.fail(String(error)) }
  t.equal(await autostartOnDates(rt.db, rt.clock.now(), 100, noErrors), 2, 'each tenant\'s today started its process')

  // A name neither reads (kept before Intl checked it): that tenant's templates fail alone.
  await sql`update tenants set time_zone = 'Not/AZone' where id = ${other.id}`.execute(rt.db)
  await other.client.post('/v1/addresses', { maintainerUserId: otherUser, fields: { handoverOn: '2029-05-12' } })
  await rt.api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { handoverOn: '2029-05-11' } })
  rt.clock.set('2029-05-11T08:00:00Z')
  const failed: string[] = []
  t.equal(await autostartOnDates(rt.db, rt.clock.now(), 100, (_error, templateId) => { failed.push(templateId) }), 1, 'the other tenant\'s template started its process')
  t.same(failed, [sydney], 'the template of the tenant whose zone cannot be read failed alone')
  t.equal((await rt.api.get(`/v1/process-templates/${berlin}/autostart-runs`)).data.items.length, 2)
})

t.test('a date check that failed is tried again a minute later, not ten', async (t) => {
  const { rt, failures, log } = await handoverOnDates(t, '2029-05-10T06:00:00Z')
  await rt.api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { handoverOn: '2029-05-10' } })

  const scheduler = rt.newScheduler({}, log)
  // The table of runs away for one pass: the check fails as it would with the database gone a moment.
  await sql`alter table autostart_runs rename to autostart_runs_away`.execute(rt.db)
  t.equal((await scheduler.runOnce()).autostarts, 0)
  await sql`alter table autostart_runs_away rename to autostart_runs`.execute(rt.db)
  t.ok(failures.length > 0, 'the failed check was logged')

  rt.clock.advance(59_000)
  t.equal((await scheduler.runOnce()).autostarts, 0, 'not at once: a database away would be asked on every pass')
  rt.clock.advance(1_000)
  t.equal((await scheduler.runOnce()).autostarts, 1, 'a minute after the failure the date starts its process')
})

/** A runtime at `at` (by default 06:00 on 6 July 2029 in Berlin), with an active template started on each address's `handoverOn`, and a log that keeps errors. */
async function handoverOnDates(t: Test, at = '2029-07-06T04:00:00Z') {
  const rt = await setupRuntime(t)
  const failures: unknown[] = []
  const log = { info() {}, warn() {}, error: (fields: unknown) => { failures.push(fields) } }
  rt.clock.set(at)
  const created = await rt.api.post('/v1/process-templates', {
    name: 'Handover', controllerUserId: rt.controller.id,
    autostart: { on: 'dateReached', record: 'address', field: 'handoverOn', responsible: 'maintainer' }
  })
  const templateId = created.data.id as string
  await rt.api.post(`/v1/process-templates/${templateId}/steps`, { kind: 'task', name: 'Hand over the keys', refersTo: { address: true } })
  t.equal((await rt.api.patch(`/v1/process-templates/${templateId}`, { active: true })).statusCode, 200)
  return { rt, failures, log, templateId }
}

t.test('a worker whose clock is stepped back checks dates again at once, not once its clock is back where it was', async (t) => {
  const { rt, failures, log, templateId } = await handoverOnDates(t)
  const scheduler = rt.newScheduler({}, log)
  t.equal((await scheduler.runOnce()).autostarts, 0)

  // The clock was six hours ahead and is stepped back to 23:30 on 5 July; a handover for 6 July is entered.
  rt.clock.set('2029-07-05T21:30:00Z')
  const address = (await rt.api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { handoverOn: '2029-07-06' } })).data.id as string
  t.equal((await scheduler.runOnce()).autostarts, 0, 'still the 5th: not due yet')
  rt.clock.set('2029-07-05T22:10:00Z') // 00:10 on 6 July, ten minutes after the dates were checked last
  t.equal((await scheduler.runOnce()).autostarts, 1, 'the 6th starts its process within ten minutes, not six hours later')
  const runs = (await rt.api.get(`/v1/process-templates/${templateId}/autostart-runs`)).data.items as { recordId: string; occurrence: string }[]
  t.match(runs, [{ recordId: address, occurrence: 'date:2029-07-06' }])
  t.same(failures, [])
})

t.test('the running loop after its clock is stepped back: its chores run on, dates among them', async (t) => {
  const { rt, failures, log, templateId } = await handoverOnDates(t)
  const newAddress = async () => (await rt.api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { handoverOn: '2029-07-06' } })).data.id as string
  // The loop runs in real time (it sleeps its poll interval between passes); its clock is the test's.
  const started = async (address: string) => {
    for (let i = 0; i < 300; i++) {
      const runs = (await rt.api.get(`/v1/process-templates/${templateId}/autostart-runs`)).data.items as { recordId: string }[]
      if (runs.some((r) => r.recordId === address)) return true
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    return false
  }
  const scheduler = rt.newScheduler({ pollIntervalMs: 20 }, log)
  t.teardown(() => scheduler.stop(1000))
  const first = await newAddress()
  await scheduler.start()
  t.ok(await started(first), 'the loop starts today\'s process')
  await new Promise((resolve) => setTimeout(resolve, 500)) // its passes after the start find nothing more

  // Six hours ahead, the clock is stepped back to 23:30 on 5 July; a handover for 6 July is entered, and midnight passes.
  rt.clock.set('2029-07-05T21:30:00Z')
  const second = await newAddress()
  rt.clock.set('2029-07-05T22:10:00Z')
  t.ok(await started(second), 'the 6th starts its process at once, not once the clock is back at 06:00')
  await scheduler.stop(1000)
  t.same(failures, [])
})

t.test('a record dated the day whose write was under way at midnight starts on a later pass of the next day', async (t) => {
  const { rt, failures, log, templateId } = await handoverOnDates(t, '2029-05-10T06:00:00Z')
  const pass = async (at: string) => {
    rt.clock.set(at)
    return (await rt.newScheduler({}, log).runOnce()).autostarts
  }
  // A template started on an address's creation, locked by the test: a create waits on it, its address inserted and not committed.
  const gate = (await rt.api.post('/v1/process-templates', {
    name: 'Welcome', controllerUserId: rt.controller.id, autostart: { on: 'recordCreated', record: 'address', responsible: 'maintainer' }
  })).data.id as string
  await rt.api.post(`/v1/process-templates/${gate}/steps`, { kind: 'task', name: 'Call', refersTo: { address: true } })
  t.equal((await rt.api.patch(`/v1/process-templates/${gate}`, { active: true })).statusCode, 200)
  t.equal(await pass('2029-05-10T21:55:00Z'), 0, '23:55 in Berlin: the 10th\'s last pass')

  rt.clock.set('2029-05-10T21:59:59Z')
  let release!: () => void
  const held = new Promise<void>((resolve) => (release = resolve))
  let locked!: () => void
  const isLocked = new Promise<void>((resolve) => (locked = resolve))
  const holder = rt.db.transaction().execute(async (trx) => {
    await sql`select id from process_templates where id = ${gate} for update`.execute(trx)
    locked()
    await held
  })
  await isLocked
  const writing = rt.api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { handoverOn: '2029-05-10' } })
  await waitForLockWait(rt.db)
  t.equal(await pass('2029-05-10T22:00:30Z'), 0, 'the 11th\'s first pass does not see the address yet')
  release()
  await holder
  const address = await writing
  t.equal(address.statusCode, 201, address.body)

  t.equal(await pass('2029-05-10T22:10:30Z'), 1, 'the next pass starts it, late')
  const runs = (await rt.api.get(`/v1/process-templates/${templateId}/autostart-runs`)).data.items
  t.match(runs, [{ recordId: address.data.id, occurrence: 'date:2029-05-10', outcome: 'started' }])
  t.equal(await pass('2029-05-10T23:05:00Z'), 0, 'past 01:00 the 10th is whole')
  const through = await sql<{ d: string }>`select to_char(dates_checked_through, 'YYYY-MM-DD') as d from process_templates where id = ${templateId}`.execute(rt.db)
  t.equal(through.rows[0]!.d, '2029-05-10')
  t.same(failures, [])
})
