import t from 'tap'
import pg from 'pg'
import { sql } from '../../src/db/kysely.js'
import { systemClock } from '../../src/adapters/clock.js'
import { buildApp, serverOptions } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { openPostgres } from '../../src/db/connect.js'
import { WORK_CHANNEL, type Wakeups, type WorkTable } from '../../src/db/wakeups.js'
import { hashKey } from '../../src/lib/keys.js'
import { client } from '../helpers/app.js'
import { databaseUrl } from '../helpers/database.js'
import { setupRuntime } from '../helpers/runtime.js'

// A process that only serves the API (`--role=api`) opens its connections with the work triggers
// silent and announces committed work itself, coalesced (src/db/wakeups.ts). Here such an app runs
// beside the runtime's own (whose connections notify through the triggers) on the same database.
const rt = await setupRuntime(t)
const { rows: [current] } = await sql<{ name: string }>`select current_database() as name`.execute(rt.db)
const url = databaseUrl(current!.name)
const quiet = openPostgres(url, { poolMax: 4, quietTriggers: true })

/** What the API announced, with the notifications heard by then. */
const announced: { tables: WorkTable[]; heardBefore: number }[] = []
const wakeups: Wakeups = {
  announce(tables) {
    announced.push({ tables: [...tables], heardBefore: heard.length })
    quiet.wakeups.announce(tables)
  }
}
const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true' })
const app = await buildApp({ config, db: quiet.db, operatorKeyHash: hashKey(rt.operatorKey), clock: rt.clock, wakeups }, serverOptions(config, false))
await app.ready()
const api = client(app, rt.tenant.key)

const heard: { payload: string | undefined; at: number }[] = []
const listener = new pg.Client({ connectionString: url })
await listener.connect()
listener.on('notification', (message) => heard.push({ payload: message.payload, at: performance.now() }))
await listener.query(`listen ${WORK_CHANNEL}`)
t.teardown(async () => {
  await app.close()
  await listener.end()
  await quiet.close()
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
/** Lets notifications already sent arrive, then forgets them. */
async function quietSpell(): Promise<void> {
  await sleep(200)
  heard.length = 0
  announced.length = 0
}

const templateId = await rt.template([{ kind: 'webhook', name: 'Valuation', refersTo: { property: true } }])

t.test('the work triggers are silent on the API\'s connections and still notify on every other', async (t) => {
  rt.clock.set(new Date())
  await rt.start(templateId)
  await quietSpell()
  const touch = sql`update instance_steps set start_at = start_at where tenant_id = ${rt.tenant.id} and state = 'due'`
  const touched = await touch.execute(quiet.db)
  t.ok(Number(touched.numAffectedRows) > 0, 'due steps were updated')
  await quiet.db.transaction().execute((trx) => touch.execute(trx))
  await sleep(300)
  t.same(heard, [], 'committed on a quiet connection: no NOTIFY')

  await touch.execute(rt.db)
  for (let i = 0; i < 100 && heard.length === 0; i++) await sleep(10)
  t.same(heard.map((h) => h.payload), ['instance_steps'], 'the same write on an ordinary connection notifies')
})

t.test('a quiet connection skips the work triggers in their WHEN clause, without calling their function', async (t) => {
  const { rows } = await sql<{ name: string; definition: string }>`
    select tgname as name, pg_get_triggerdef(oid) as definition from pg_trigger
    where tgname in ('deliveries_notify_work', 'instance_steps_notify_work', 'outbox_mails_notify_work') order by tgname`.execute(rt.db)
  t.equal(rows.length, 3, 'the three work triggers')
  for (const { name, definition } of rows) {
    t.match(definition, /WHEN \(.*current_setting\('baton\.notify'::text, true\) IS DISTINCT FROM 'off'::text/, name)
  }
})

t.test('a start through the API wakes a listening scheduler at once, with a NOTIFY sent after its commit', async (t) => {
  const scheduler = rt.newScheduler({ pollIntervalMs: 5000 }, undefined, {
    clock: systemClock, listen: (onWork) => quiet.listen(WORK_CHANNEL, onWork)
  })
  await scheduler.start()
  t.teardown(() => scheduler.stop(1000))
  await sleep(500) // its first pass has found nothing; it sleeps for its 5 s poll interval
  await quietSpell()

  rt.clock.set(new Date())
  const began = performance.now()
  const startedAt = Date.now()
  const started = await api.post('/v1/process-instances', { templateId, responsibleUserId: rt.worker.id, propertyId: rt.propertyId })
  t.equal(started.statusCode, 201)
  t.same(announced, [{ tables: ['deliveries', 'instance_steps'], heardBefore: 0 }],
    'announced once the transaction had committed, and nothing was notified before')
  const stepId: string = started.data.steps[0].id
  for (let i = 0; i < 400 && !rt.provider.calls.some((c) => c.query.stepId === stepId); i++) await sleep(5)
  const call = rt.provider.calls.find((c) => c.query.stepId === stepId)
  t.ok(call, 'the provider was called')
  t.ok(heard.length > 0 && heard[0]!.at - began < 1000, 'the NOTIFY came at once')
  t.same([...new Set(heard.map((h) => h.payload))].sort(), ['deliveries', 'instance_steps'])
  t.ok(call && call.at - startedAt < 1000, `called ${call ? call.at - startedAt : '-'} ms after the start, well within the 5 s poll interval`)
})

t.test('a start that does not commit announces nothing and sends nothing', async (t) => {
  // The commit itself fails: every statement of the start ran, its due step and delivery were written.
  await sql.raw(`create function test_refuse_commit() returns trigger language plpgsql as $$
    begin raise exception 'refused at commit by the test'; end $$`).execute(rt.db)
  await sql.raw(`create constraint trigger test_refuse_commit after insert on process_instances deferrable initially deferred
    for each row when (new.template_name = 'Refused at commit') execute function test_refuse_commit()`).execute(rt.db)
  t.teardown(async () => {
    await sql.raw('drop trigger test_refuse_commit on process_instances').execute(rt.db)
    await sql.raw('drop function test_refuse_commit()').execute(rt.db)
  })
  const refusedTemplate = await rt.template([{ kind: 'webhook', name: 'Valuation', refersTo: { property: true } }])
  await rt.api.patch(`/v1/process-templates/${refusedTemplate}`, { name: 'Refused at commit' },
    { 'if-match': `"${(await rt.api.get(`/v1/process-templates/${refusedTemplate}`)).data.version}"` })
  await quietSpell()
  rt.clock.set(new Date())
  const refused = await api.post('/v1/process-instances', { templateId: refusedTemplate, responsibleUserId: rt.worker.id, propertyId: rt.propertyId })
  t.equal(refused.statusCode, 500, 'the commit failed')
  const invalid = await api.post('/v1/process-instances', { templateId, responsibleUserId: rt.worker.id })
  t.equal(invalid.statusCode, 422, 'refused before writing: the webhook step needs the property')
  await sleep(300)
  t.same(announced, [])
  t.same(heard, [])
  const { rows } = await sql<{ count: string }>`select count(*) from process_instances where template_id = ${refusedTemplate}`.execute(rt.db)
  t.equal(Number(rows[0]!.count), 0, 'nothing of the start was kept')
})

// How many NOTIFYs depends on how the starts spread over 20 ms windows (test/db/wakeups.test.ts checks
// the coalescing itself); never more than one per start, and the last start is among them.
t.test('many starts at once: at most one NOTIFY per start, and every start is announced', async (t) => {
  await quietSpell()
  rt.clock.set(new Date())
  const taskTemplate = await rt.template([{ kind: 'task', name: 'Inspect' }])
  const results = await Promise.all(Array.from({ length: 20 }, () =>
    api.post('/v1/process-instances', { templateId: taskTemplate, responsibleUserId: rt.worker.id })))
  t.same(results.map((r) => r.statusCode), Array(20).fill(201))
  await sleep(300)
  t.equal(announced.length, 20, 'each start announced its due step')
  t.ok(heard.length >= 1 && heard.length <= 20, `${heard.length} NOTIFYs for 20 starts`)
  t.same([...new Set(heard.map((h) => h.payload))], ['instance_steps'])
})
