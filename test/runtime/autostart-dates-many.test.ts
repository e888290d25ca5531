import t, { type Test } from 'tap'
import { openPostgres } from '../../src/db/connect.js'
import { isStatementTimeout } from '../../src/db/errors.js'
import { sql, type KyselyPlugin } from '../../src/db/kysely.js'
import { autostartOnDates } from '../../src/modules/autostart/service.js'
import { setupRuntime } from '../helpers/runtime.js'

// The date chore runs over every tenant's dateReached templates (docs/architecture.md, Autostart).
// Most days of most templates find nothing: a pass asks which do for many templates in each
// statement and records their dates checked together, so its statements do not grow with the
// templates that find nothing. One template at a time, 10,000 tenants' templates took 30 to 40 s
// a pass, while the worker's other chores waited.

t.test('a pass over templates that find nothing takes as many statements for twelve as for one', async (t) => {
  const rt = await setupRuntime(t)
  const api = rt.api
  const failures: unknown[] = []
  let statements = 0
  const counted: KyselyPlugin = {
    transformQuery: (args) => { statements += 1; return args.node },
    transformResult: async (args) => args.result
  }
  const db = rt.db.withPlugin(counted)
  const pass = async (at: string) => {
    statements = 0
    t.equal(await autostartOnDates(db, new Date(at), 100, (error) => failures.push(error)), 0, 'nothing started')
    return statements
  }
  const newTemplate = async (n: number) => {
    const created = await api.post('/v1/process-templates', {
      name: `Handover ${n}`, controllerUserId: rt.controller.id, autostart: { on: 'dateReached', record: 'address', field: 'handoverOn', responsible: 'maintainer' }
    })
    await api.post(`/v1/process-templates/${created.data.id}/steps`, { kind: 'task', name: 'Hand over the keys', refersTo: { address: true } })
    t.equal((await api.patch(`/v1/process-templates/${created.data.id}`, { active: true })).statusCode, 200)
  }
  // Through the day before yesterday: the pass checks yesterday and today, and records yesterday as checked.
  const nextDay = async () => {
    await sql`update process_templates set dates_checked_through = '2029-05-08' where autostart is not null`.execute(rt.db)
    return pass('2029-05-10T08:00:00Z')
  }
  const checkedThrough = async () => (await sql<{ d: string }>`
    select distinct to_char(dates_checked_through, 'YYYY-MM-DD') as d from process_templates where autostart is not null`.execute(rt.db)).rows.map((r) => r.d)

  rt.clock.set('2029-05-10T06:00:00Z')
  await api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { handoverOn: '2029-08-01' } })
  await newTemplate(1)
  const one = { sameDay: await pass('2029-05-10T08:00:00Z'), nextDay: await nextDay() }
  t.same(await checkedThrough(), ['2029-05-09'])
  for (let n = 2; n <= 12; n++) await newTemplate(n)
  const twelve = { sameDay: await pass('2029-05-10T08:00:00Z'), nextDay: await nextDay() }
  t.same(twelve, one, `statements for one template: ${JSON.stringify(one)}`)
  t.same(await checkedThrough(), ['2029-05-09'], 'every template checked through yesterday')
  t.same(failures, [], 'no template failed')
})

type Api = Awaited<ReturnType<typeof setupRuntime>>['api']

/** An active template that starts a task for an address's maintainer on the address's handoverOn date. */
async function handover(t: Test, api: Api, controllerUserId: string): Promise<string> {
  const created = await api.post('/v1/process-templates', {
    name: 'Handover', controllerUserId, autostart: { on: 'dateReached', record: 'address', field: 'handoverOn', responsible: 'maintainer' }
  })
  await api.post(`/v1/process-templates/${created.data.id}/steps`, { kind: 'task', name: 'Hand over the keys', refersTo: { address: true } })
  t.equal((await api.patch(`/v1/process-templates/${created.data.id}`, { active: true })).statusCode, 200)
  return created.data.id as string
}

t.test('a search that overruns the statement timeout fails its own template; the others still start', async (t) => {
  const rt = await setupRuntime(t)
  rt.clock.set('2029-05-10T06:00:00Z')
  // A tenant whose addresses are so long that reading them overruns the timeout; none is due. Long
  // rather than many, so that the planner's view of the table (few rows) is that of the others.
  const big = await rt.newTenant()
  const bigController = (await big.client.post('/v1/users', { name: 'Bea Controller', email: 'bea@example.com' })).data
  const slow = await handover(t, big.client, bigController.id)
  // 10,000 of them, all alike: one written, the rest copied from it. Postgres compresses each new value,
  // not one copied from a stored row: written one by one, they took it some 10 s of CPU, for the same read.
  await sql`insert into addresses (tenant_id, id, fields)
    values (${big.id}, gen_random_uuid(), jsonb_build_object('handoverOn', '2029-08-01', 'notes', repeat(md5('notes'), 3000)))`.execute(rt.db)
  await sql`insert into addresses (tenant_id, id, fields)
    select tenant_id, gen_random_uuid(), fields from addresses, generate_series(2, 10000) where tenant_id = ${big.id}`.execute(rt.db)
  // The others' searches, in the list of one statement with its: asked again in halves, they still find their candidates.
  const templates = [await handover(t, rt.api, rt.controller.id), await handover(t, rt.api, rt.controller.id)]
  const due = (await rt.api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { handoverOn: '2029-05-10' } })).data.id as string

  const short = openPostgres(rt.databaseUrl, { statementTimeoutMs: 80 })
  t.teardown(() => short.close())
  const failures: { error: unknown; templateId: string }[] = []
  t.equal(await autostartOnDates(short.db, new Date('2029-05-10T08:00:00Z'), 100, (error, templateId) => failures.push({ error, templateId })), 2, 'both other templates started')
  t.same(failures.map((f) => f.templateId), [slow], 'the slow search fails its template alone')
  t.ok(failures.every((f) => isStatementTimeout(f.error)), 'on the statement timeout')
  for (const templateId of templates) {
    const runs = (await rt.api.get(`/v1/process-templates/${templateId}/autostart-runs`)).data.items as { recordId: string; outcome: string }[]
    t.match(runs, [{ recordId: due, outcome: 'started' }], 'the due address started its process')
  }
})

// Each template claimed up to the batch a pass: a tenant with many date templates whose records fell
// due on one day made a pass start templates × batch processes (1,000 in 3.4 s for ten templates of
// 300 records at a batch of 100), while every tenant's automatic steps, step starts and deadlines
// waited for the pass to end, and again on the next pass until they were all started.
t.test('a pass starts about its batch in all, shared between the tenants that have dates due; the next passes start the rest', async (t) => {
  const rt = await setupRuntime(t)
  rt.clock.set('2029-05-10T06:00:00Z')
  // This tenant: four templates over the same ten addresses due today, 40 processes to start.
  const many = [] as string[]
  for (let n = 0; n < 4; n++) many.push(await handover(t, rt.api, rt.controller.id))
  for (let n = 0; n < 10; n++) await rt.api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { handoverOn: '2029-05-10' } })
  // Another tenant: one template, one address due today.
  const other = await rt.newTenant()
  const otherUser = (await other.client.post('/v1/users', { name: 'Olga Other', email: 'olga@example.com' })).data.id as string
  const theirs = await handover(t, other.client, otherUser)
  await other.client.post('/v1/addresses', { maintainerUserId: otherUser, fields: { handoverOn: '2029-05-10' } })

  const failures: unknown[] = []
  const startedOf = async (templateIds: string[]) => (await sql<{ n: number }>`
    select count(*)::int as n from autostart_runs where template_id in (${sql.join(templateIds)}) and outcome = 'started'`.execute(rt.db)).rows[0]!.n
  const passes: number[] = []
  for (let claimed = -1; claimed !== 0 && passes.length < 20;) {
    claimed = await autostartOnDates(rt.db, new Date('2029-05-10T08:00:00Z'), 6, (error) => failures.push(error))
    passes.push(claimed)
    if (passes.length === 1) t.equal(await startedOf([theirs]), 1, 'the other tenant\'s date started on the first pass')
  }
  t.ok(passes.every((claimed) => claimed <= 6), `no pass started more than its batch of 6: ${passes.join(', ')}`)
  t.equal(await startedOf(many), 40, 'the passes after it started the rest')
  t.equal(await startedOf([theirs]), 1)
  t.same(failures, [])
})
