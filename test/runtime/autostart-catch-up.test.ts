import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { autostartOnDates, DATE_CATCH_UP_DAYS, daysAfter } from '../../src/modules/autostart/service.js'
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
  t.same(daysAfter('2029-03-05', '2029-03-01'), ['2029-03-01'], 'a clock set back: today alone')
})

t.test('dateReached catches up missed days', async (t) => {
  const rt = await setupRuntime(t)
  const api = rt.api
  // Every pass in a scheduler of its own: a worker checks dates at most every ten minutes.
  const pass = async (at: string, settings: { batchSize?: number } = {}) => {
    rt.clock.set(at)
    return (await rt.newScheduler(settings).runOnce()).autostarts
  }
  const newAddress = async (handoverOn: string) =>
    (await api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { handoverOn } })).data.id as string
  const startedFor = async (templateId: string) => {
    const runs = (await api.get(`/v1/process-templates/${templateId}/autostart-runs?limit=200`)).data.items as { recordId: string; occurrence: string; outcome: string }[]
    return new Map(runs.map((r) => [r.recordId, r]))
  }
  const checkedThrough = async (templateId: string) => (await sql<{ d: string | null }>`
    select to_char(dates_checked_through, 'YYYY-MM-DD') as d from process_templates where id = ${templateId}`.execute(rt.db)).rows[0]?.d

  rt.clock.set('2029-05-10T06:00:00Z') // 08:00 in Berlin
  const created = await api.post('/v1/process-templates', {
    name: 'Handover', controllerUserId: rt.controller.id,
    autostart: { on: 'dateReached', record: 'address', field: 'handoverOn', responsible: 'maintainer' }
  })
  const templateId = created.data.id as string
  await api.post(`/v1/process-templates/${templateId}/steps`, { kind: 'task', name: 'Hand over the keys', refersTo: { address: true } })
  const activate = async (active: boolean) => {
    const response = await api.patch(`/v1/process-templates/${templateId}`, { active })
    t.equal(response.statusCode, 200, response.body)
  }
  await activate(true)
  t.equal(await checkedThrough(templateId), '2029-05-09', 'a template activated today watches from today')

  const before = await newAddress('2029-05-09')
  const today = await newAddress('2029-05-10')
  const missed = [await newAddress('2029-05-11'), await newAddress('2029-05-12')]
  const later = await newAddress('2029-05-13')

  await t.test('a template starts nothing for the days before it watched them', async (t) => {
    t.equal(await pass('2029-05-10T08:00:00Z'), 1)
    const runs = await startedFor(templateId)
    t.match(runs.get(today), { occurrence: 'date:2029-05-10', outcome: 'started' })
    t.notOk(runs.has(before), 'yesterday\'s date, before the activation')
  })

  await t.test('days on which no worker ran start late, each record once, saying so', async (t) => {
    // No worker on 11 and 12 May; one runs again on the 13th.
    const [a, b] = await Promise.all([pass('2029-05-13T05:00:00Z'), rt.newScheduler().runOnce()])
    t.equal(a + b.autostarts, 3, 'two missed days and today, started once across two workers')
    const runs = await startedFor(templateId)
    t.match(runs.get(missed[0]!), { occurrence: 'date:2029-05-11', outcome: 'started' })
    t.match(runs.get(missed[1]!), { occurrence: 'date:2029-05-12', outcome: 'started' })
    t.match(runs.get(later), { occurrence: 'date:2029-05-13', outcome: 'started' })
    t.equal(runs.size, 4)
    const log = (await api.get(`/v1/addresses/${missed[0]}/activities`)).data.items as { kind: string; message: string }[]
    t.ok(log.some((a) => a.kind === 'processStarted' && /handoverOn 2029-05-11 is today on 2029-05-11 \(checked late\)/.test(a.message)), JSON.stringify(log))
    t.equal(await checkedThrough(templateId), '2029-05-12', 'whole through yesterday')
    t.equal(await pass('2029-05-13T06:00:00Z'), 0, 'a later pass the same day starts nothing again')
  })

  await t.test('a record written after its day\'s last pass starts the next day', async (t) => {
    t.equal(await pass('2029-05-13T21:50:00Z'), 0) // 23:50 in Berlin: the day's last pass
    rt.clock.set('2029-05-13T21:55:00Z')
    const lateEntry = await newAddress('2029-05-13')
    t.equal(await pass('2029-05-14T04:00:00Z'), 1)
    t.match((await startedFor(templateId)).get(lateEntry), { occurrence: 'date:2029-05-13', outcome: 'started' })
    t.equal(await checkedThrough(templateId), '2029-05-13')
  })

  await t.test('the days a template was inactive are not caught up', async (t) => {
    rt.clock.set('2029-05-14T10:00:00Z')
    await activate(false)
    const whileOff = await newAddress('2029-05-17')
    rt.clock.set('2029-05-20T10:00:00Z')
    await activate(true)
    t.equal(await checkedThrough(templateId), '2029-05-19')
    t.equal(await pass('2029-05-20T11:00:00Z'), 0)
    t.equal(await pass('2029-05-21T11:00:00Z'), 0)
    t.notOk((await startedFor(templateId)).has(whileOff))
    // A change of the autostart starts watching anew, too.
    const changed = await api.patch(`/v1/process-templates/${templateId}`,
      { autostart: { on: 'dateReached', record: 'address', field: 'handoverOn', daysOffset: 0, responsible: { user: rt.worker.id } } })
    t.equal(changed.statusCode, 200, changed.body)
    t.equal(await checkedThrough(templateId), '2029-05-20')
    const same = await api.patch(`/v1/process-templates/${templateId}`,
      { name: 'Handover', autostart: { responsible: { user: rt.worker.id }, daysOffset: 0, field: 'handoverOn', record: 'address', on: 'dateReached' } })
    t.equal(same.statusCode, 200, same.body)
    t.equal(await checkedThrough(templateId), '2029-05-20', 'the same setting again changes nothing')
  })

  await t.test(`at most ${DATE_CATCH_UP_DAYS} days back`, async (t) => {
    t.equal(await pass('2029-05-21T12:00:00Z'), 0)
    const tooOld = await newAddress('2029-06-01')
    const recent = await newAddress('2029-06-10')
    t.equal(await pass('2029-07-11T10:00:00Z'), 1) // 31 days after 10 June, 41 after 1 June
    const runs = await startedFor(templateId)
    t.ok(runs.has(recent))
    t.notOk(runs.has(tooOld), 'given up')
    t.equal(await checkedThrough(templateId), '2029-07-10')
  })

  await t.test('a missed day with a record a write holds is checked again until it is started', async (t) => {
    const held = await newAddress('2029-07-12')
    const free = await newAddress('2029-07-13')
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
    const runs = await startedFor(templateId)
    t.match(runs.get(held), { occurrence: 'date:2029-07-12', outcome: 'started' })
    t.ok(runs.has(free))
    t.equal(await checkedThrough(templateId), '2029-07-13')
  })

  await t.test('a pass claims at most its batch; the next pass goes on where it stopped', async (t) => {
    const ids = [await newAddress('2029-07-15'), await newAddress('2029-07-15'), await newAddress('2029-07-16'), await newAddress('2029-07-17')]
    rt.clock.set('2029-07-18T10:00:00Z')
    // The chore alone: a scheduler's pass runs it again at once while it claims.
    t.equal(await autostartOnDates(rt.db, rt.clock.now(), 2), 2)
    t.equal(await checkedThrough(templateId), '2029-07-15')
    t.equal(await autostartOnDates(rt.db, rt.clock.now(), 2), 2)
    t.equal(await checkedThrough(templateId), '2029-07-17')
    t.equal(await autostartOnDates(rt.db, rt.clock.now(), 2), 0)
    const runs = await startedFor(templateId)
    t.same(ids.map((id) => runs.get(id)?.outcome), ['started', 'started', 'started', 'started'])
  })
})
