// A database whose operator chose server settings for every session (`alter database … set`, `alter role … set`):
// Baton's own connections must read and write as on a database left at the defaults (src/db/postgres.ts,
// SESSION_STYLE). Before they pinned them, the date styles failed the API's first write with a 500 and the
// clock read 1970, and serializable, repeatable read or a short lock timeout answered 409 to most concurrent
// writes of one record; the time zones, interval styles and bytea output held, and are walked as a guard.
import t, { type Test } from 'tap'
import { DAY, HOUR } from '../helpers/clock.js'
import { openPostgres } from '../../src/db/connect.js'
import { databaseTime } from '../../src/db/database-time.js'
import { sql } from '../../src/db/kysely.js'
import { createTestDatabase, databaseUrl } from '../helpers/database.js'
import { setupRuntime } from '../helpers/runtime.js'

/** A process through the API and the worker: a start, reads and lists, a webhook call with a write-back, a retry, an advance and a deadline's mail. */
async function walkProcess(t: Test, databaseSettings: Record<string, string>) {
  const rt = await setupRuntime(t, { databaseSettings })
  const startedAt = rt.clock.now()
  const templateId = await rt.template([
    { kind: 'webhook', name: 'Ask ValueCo', refersTo: { property: true } },
    { kind: 'task', name: 'Call the owner', deadlineDays: 1, refersTo: { property: true } }
  ])
  const template = await rt.api.get(`/v1/process-templates/${templateId}`)
  t.equal(template.statusCode, 200, template.body)
  t.equal(template.data.createdAt, startedAt.toISOString(), 'a template\'s time reads back as written')
  const started = await rt.start(templateId)
  t.equal(started.startedAt, startedAt.toISOString(), 'a process\'s time reads back as written')
  const listed = await rt.api.get('/v1/process-instances?limit=10')
  t.equal(listed.statusCode, 200, listed.body)
  t.same(listed.data.items.map((i: { id: string }) => i.id), [started.id])

  rt.provider.queue({ status: 503, body: 'busy' })
  t.equal((await rt.scheduler.runOnce()).deliveries, 1)
  let view = await rt.instance(started.id)
  t.equal(view.steps[0].delivery.status, 'pending', 'a 503 is retried')
  t.equal(view.steps[0].delivery.lastStatusCode, 503)
  t.ok(new Date(view.steps[0].delivery.nextAttemptAt).getTime() > rt.clock.now().getTime(), 'later')
  rt.clock.advance(HOUR)
  t.equal((await rt.scheduler.runOnce()).deliveries, 1)
  view = await rt.instance(started.id)
  t.equal(view.steps[0].delivery.status, 'succeeded', JSON.stringify(view.steps[0].delivery))
  t.equal(view.steps[1].state, 'due')
  t.equal(view.steps[1].deadlineAt, new Date(rt.clock.now().getTime() + DAY).toISOString(), 'the deadline a day on')
  t.equal(rt.provider.calls.length, 2, 'called twice, no more')

  const claim = rt.provider.calls[1]!.query.apiClaim
  if (claim) {
    const written = await rt.as(claim).patch(`/v1/properties/${rt.propertyId}`, { fields: { marketValue: 512000 } })
    t.equal(written.statusCode, 200, written.body)
    t.equal(written.data.updatedAt, rt.clock.now().toISOString())
  }
  const property = await rt.api.get(`/v1/properties/${rt.propertyId}`)
  t.equal(property.statusCode, 200, property.body)

  rt.clock.advance(DAY + HOUR)
  const run = await rt.scheduler.runOnce()
  t.equal(run.deadlines, 1, 'the missed deadline is found')
  await rt.scheduler.runOnce()
  const mails = rt.smtp.mails.filter((m) => m.subject.includes('Deadline missed'))
  t.equal(mails.length, 1, 'and mailed once')
  t.match(mails[0]?.subject, /\(1 hour late\)/)
  const advanced = await rt.api.post(`/v1/process-instances/${started.id}/advance`, { outcome: 'done', stepId: view.steps[1].id })
  t.equal(advanced.statusCode, 200, advanced.body)
  t.equal(advanced.data.status, 'completed')
  t.equal(advanced.data.endedAt, rt.clock.now().toISOString())
}

const styles: Record<string, Record<string, string>> = {
  'SQL, DMY': { DateStyle: 'SQL, DMY' },
  German: { DateStyle: 'German' },
  'Postgres, MDY': { DateStyle: 'Postgres, MDY' },
  'iso_8601 intervals in Kathmandu': { IntervalStyle: 'iso_8601', TimeZone: 'Asia/Kathmandu' },
  'sql_standard intervals in a POSIX zone': { TimeZone: 'UTC+5', IntervalStyle: 'sql_standard' },
  'New York, escaped bytea and short floats': { TimeZone: 'America/New_York', bytea_output: 'escape', extra_float_digits: '0' }
}
for (const [name, settings] of Object.entries(styles)) {
  t.test(`a process walks as ever on a database set to ${name}`, (t) => walkProcess(t, settings))
}

t.test('the database\'s clock, which every Baton process goes by, reads the time on a database set to German dates', async (t) => {
  const database = await createTestDatabase({}, { DateStyle: 'German' })
  t.teardown(() => database.drop())
  const { time } = await databaseTime(database.db, () => performance.now())
  t.ok(Math.abs(time.getTime() - Date.now()) < 60_000, `${time.toISOString()}, not 1970`)
})

const waits: Record<string, Record<string, string>> = {
  'serializable transactions': { default_transaction_isolation: 'serializable' },
  'repeatable read transactions': { default_transaction_isolation: 'repeatable read' },
  'a lock timeout of 20 ms': { lock_timeout: '20ms' }
}
for (const [name, settings] of Object.entries(waits)) {
  t.test(`concurrent starts and writes of one record all succeed, one after another, on a database set to ${name}`, async (t) => {
    const rt = await setupRuntime(t, { databaseSettings: settings })
    const templateId = await rt.template([{ kind: 'task', name: 'Call the owner' }])
    const starts = await Promise.all(Array.from({ length: 20 }, () =>
      rt.api.post('/v1/process-instances', { templateId, responsibleUserId: rt.worker.id, propertyId: rt.propertyId })))
    t.same(starts.filter((s) => s.statusCode !== 201).map((s) => s.body), [], 'every start answered 201')
    const writes = await Promise.all(Array.from({ length: 20 }, (_, i) => rt.api.patch(`/v1/properties/${rt.propertyId}`, { fields: { [`f${i}`]: i } })))
    t.same(writes.filter((w) => w.statusCode !== 200).map((w) => w.body), [], 'every write answered 200')
    const property = await rt.api.get(`/v1/properties/${rt.propertyId}`)
    t.equal(property.data.version, 21, 'each wrote its field')
  })
}

t.test('the connection string\'s options cannot change how Baton reads values; its lock timeout stays', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const url = new URL(databaseUrl(database.name))
  url.searchParams.set('options', '-c DateStyle=German -c default_transaction_isolation=serializable -c lock_timeout=5s')
  const handle = openPostgres(url.toString(), { poolMax: 1 })
  t.teardown(() => handle.close())
  const { rows } = await sql<{ at: Date; isolation: string; lockTimeout: string }>`
    select '2024-05-03T10:00:00Z'::timestamptz as at, current_setting('default_transaction_isolation') as isolation, current_setting('lock_timeout') as "lockTimeout"`.execute(handle.db)
  t.same(rows, [{ at: new Date('2024-05-03T10:00:00Z'), isolation: 'read committed', lockTimeout: '5s' }])
})

t.test('a session of Baton\'s outlives a database\'s idle session timeout, as the worker\'s host slots and LISTEN need', async (t) => {
  const database = await createTestDatabase({}, { idle_session_timeout: '200ms' })
  t.teardown(() => database.drop())
  const handle = openPostgres(databaseUrl(database.name), { poolMax: 1 })
  t.teardown(() => handle.close())
  const pid = async () => (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(handle.db)).rows[0]!.pid
  const first = await pid()
  await new Promise((resolve) => setTimeout(resolve, 500)) // the server's own timer: no clock of ours to move
  t.equal(await pid(), first, 'the same session, idle for 500 ms')
})
