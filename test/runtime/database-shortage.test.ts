// The database runs short of disk space or memory while Baton runs (SQLSTATE class 53: 53100 disk_full,
// 53200 out_of_memory, 53000 insufficient_resources). Postgres then refuses the writes that need what it
// lacks, on connections that stay sound, and takes them again once the space is back: a request answers
// 503 with Retry-After, not 500; a call's outcome waits to be recorded rather than being given up (its
// call made again after the lease); an automatic step is not failed for it. The refusals are Postgres's
// own, raised with the server's code by a trigger on the test's database (a full disk chooses no table);
// the last test fills a real disk, a tablespace on a tmpfs, when this process may mount one.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import pg from 'pg'
import pino from 'pino'
import t, { type Test } from 'tap'
import { systemClock } from '../../src/adapters/clock.js'
import { openPostgres } from '../../src/db/connect.js'
import { sql } from '../../src/db/kysely.js'
import type { Response } from '../helpers/app.js'
import { ADMIN_URL, databaseUrl } from '../helpers/database.js'
import { appBehindFaultProxy } from '../helpers/faulty-app.js'
import { setupRuntime } from '../helpers/runtime.js'

// Made first, so that its teardown runs last (tap's run last-registered first): after the test database,
// whose tables may still be on it, is dropped.
const fullDisk = await smallTablespace(t, 16)
const rt = await setupRuntime(t)
const { rows } = await sql<{ name: string }>`select current_database() as name`.execute(rt.db)
const database = rows[0]!.name
const lines: { level: number; msg: string }[] = []
const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => { lines.push(JSON.parse(String(chunk))); done() } })
const { api } = await appBehindFaultProxy(t, rt, { poolMax: 4, statementTimeoutMs: 2000, logger: pino({ level: 'warn' }, sink) })
const task = await rt.template([{ kind: 'task', name: 'Call the owner' }])
const start = () => api.post('/v1/process-instances', { templateId: task, responsibleUserId: rt.worker.id, propertyId: rt.propertyId })
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function checkUnavailable(t: Test, response: Response): void {
  t.equal(response.statusCode, 503, response.body)
  t.match(response.headers['content-type'], /^application\/problem\+json/)
  t.equal(response.headers['retry-after'], '2')
}

// While the flag is on, Postgres refuses these inserts as a full disk refuses a write that needs a new page.
await sql.raw(`
  create table test_disk_full (on_ boolean not null);
  insert into test_disk_full values (false);
  create function test_refuse_when_full() returns trigger language plpgsql as $$
  begin
    if (select on_ from test_disk_full) and coalesce(to_jsonb(new) ->> 'kind', '') <> 'automaticStepFailed' then
      raise exception 'could not extend file "base/1/2": No space left on device' using errcode = 'disk_full';
    end if;
    return new;
  end $$;
  create trigger test_refuse_when_full before insert on process_instances for each row execute function test_refuse_when_full();
  create trigger test_refuse_when_full before insert on delivery_attempts for each row execute function test_refuse_when_full();
  create trigger test_refuse_when_full before insert on outbox_mails for each row execute function test_refuse_when_full();
`).execute(rt.db)
const diskFull = (on: boolean) => sql`update test_disk_full set on_ = ${on}`.execute(rt.db)

t.test('a start the database has no disk space for answers 503 with Retry-After, not 500, the log warns once, and it is made once space is back', async (t) => {
  lines.length = 0
  await diskFull(true)
  for (let i = 0; i < 4; i++) {
    const response = await start()
    checkUnavailable(t, response)
    t.match(response.data.detail, /^The database is short of resources; retry shortly\./, 'the answer says why, and no more of the database')
  }
  await diskFull(false)
  t.equal((await start()).statusCode, 201, 'made once space is back, without a restart')
  t.match(lines.filter((line) => line.level >= 40), [{ level: 40, msg: 'the database has no disk space left for writes: requests answer 503 with Retry-After' }],
    'one warning, naming the disk, and no error per request')
})

t.test('an outcome the database has no disk space for is recorded once space is back, its call not made twice', async (t) => {
  const webhook = await rt.template([{ kind: 'webhook', name: 'Ask ValueCo' }])
  rt.clock.set(new Date())
  rt.provider.always({ status: 200, body: 'ok', delayMs: 100 })
  const calls = rt.provider.calls.length
  const N = 4
  for (let i = 0; i < N; i++) await rt.start(webhook)
  await diskFull(true)
  const scheduler = rt.newScheduler({ pollIntervalMs: 200 }, undefined, { clock: systemClock })
  await scheduler.start()
  t.teardown(() => scheduler.stop(1000))
  while (rt.provider.calls.length < calls + N) await sleep(20)
  await sleep(1500)
  await diskFull(false)
  const back = Date.now()
  const succeeded = async () => (await rt.db.selectFrom('deliveries').select('id').where('status', '=', 'succeeded').execute()).length
  // Well within the scheduler's 60 s lease: an outcome given up would be recorded only after it, by a second call.
  while ((await succeeded()) < N && Date.now() - back < 10_000) await sleep(100)
  t.equal(await succeeded(), N, `all ${N} deliveries succeeded ${Date.now() - back} ms after space came back`)
  t.equal(rt.provider.calls.length, calls + N, 'each was called once')
  const attempts = await rt.db.selectFrom('delivery_attempts').select(['outcome']).execute()
  t.same(attempts.map((a) => a.outcome), Array(N).fill('succeeded'), 'one attempt each: none aborted and made again')
})

t.test('an automatic step whose write the database has no disk space for is not failed: it runs once space is back', async (t) => {
  const mail = await rt.template([{ kind: 'email', name: 'Tell the controller', email: { mode: 'automatic', to: 'controller', subject: 'Started', body: 'Sent.' } }])
  const started = await rt.start(mail)
  await diskFull(true)
  t.teardown(() => diskFull(false))
  await rt.scheduler.runOnce()
  const step = () => rt.db.selectFrom('instance_steps').select('state').where('instance_id', '=', started.id).executeTakeFirstOrThrow()
  t.equal((await step()).state, 'due', 'left due while its mail cannot be queued')
  await diskFull(false)
  await rt.scheduler.runOnce()
  t.not((await step()).state, 'failed', 'and run, not failed, once space is back')
  t.not((await step()).state, 'due')
  const failures = await rt.db.selectFrom('activities').select('message').where('kind', '=', 'automaticStepFailed').execute()
  t.same(failures, [], 'no step failed for it')
})

t.test('a statement refused for want of space leaves its connection in the pool: a new one per refusal only adds to the server\'s load', async (t) => {
  const handle = openPostgres(databaseUrl(database), { poolMax: 1 })
  t.teardown(() => handle.close())
  const pid = async () => (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(handle.db)).rows[0]!.pid
  const first = await pid()
  await t.rejects(sql`do $$ begin raise exception 'out of memory' using errcode = 'out_of_memory'; end $$`.execute(handle.db), { code: '53200' })
  t.equal(await pid(), first, 'the same connection answers next')
})

/**
 * A tablespace on a tmpfs of `megabytes` this process mounts, owned by the server's user, gone when the
 * file ends; instead, why it cannot be had (not root, no mount allowed, a server on another machine).
 */
async function smallTablespace(t: Test, megabytes: number): Promise<{ name: string } | string> {
  if (process.getuid?.() !== 0) return 'mounting a tmpfs needs root'
  const host = new URL(ADMIN_URL).hostname
  if (!['127.0.0.1', 'localhost', '::1', '[::1]'].includes(host)) return `the test server (${host}) is on another machine`
  const dir = mkdtempSync(join(tmpdir(), 'baton-full-disk-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${megabytes}M`, 'tmpfs', dir], { stdio: 'pipe' })
  } catch (error) {
    rmdirSync(dir)
    return `cannot mount a tmpfs here: ${String((error as { stderr?: Buffer }).stderr ?? error).trim()}`
  }
  const name = `baton_test_full_${process.pid}`
  try {
    execFileSync('chown', ['postgres', dir], { stdio: 'pipe' })
    const admin = new pg.Client({ connectionString: ADMIN_URL })
    await admin.connect()
    await admin.query(`create tablespace ${name} location '${dir}'`).finally(() => admin.end())
  } catch (error) {
    execFileSync('umount', [dir])
    rmdirSync(dir)
    return `the test server cannot use a tablespace here: ${(error as Error).message}`
  }
  t.teardown(async () => {
    try {
      const admin = new pg.Client({ connectionString: ADMIN_URL })
      await admin.connect()
      await admin.query(`drop tablespace if exists ${name}`).finally(() => admin.end())
    } finally {
      // The mount goes whatever became of the tablespace (a server that kept it has lost it with the mount).
      execFileSync('umount', ['--lazy', dir])
      rmdirSync(dir)
    }
  })
  return { name }
}

t.test('a real full disk: starts answer 201 or 503, never 500; calls in flight are recorded once space is back, none made twice', {
  skip: typeof fullDisk === 'string' && `no full disk to test: ${fullDisk}`
}, async (t) => {
  const tablespace = fullDisk as { name: string }
  const own = new pg.Client({ connectionString: databaseUrl(database) })
  await own.connect()
  t.teardown(async () => {
    // Back to the server's own disk, so the tablespace can go, and the database with the runtime.
    await own.query('drop table if exists test_filler')
    await own.query(`alter table all in tablespace ${tablespace.name} set tablespace pg_default`)
    await own.query(`alter index all in tablespace ${tablespace.name} set tablespace pg_default`)
    await own.end()
  })
  const succeededOf = async (template: string) => Number((await own.query(`select count(*) as n from deliveries where status = 'succeeded' and instance_id in
    (select id from process_instances where template_id = $1)`, [template])).rows[0].n)
  await own.query(`alter table all in tablespace pg_default set tablespace ${tablespace.name}`)
  await own.query(`alter index all in tablespace pg_default set tablespace ${tablespace.name}`)
  const webhook = await rt.template([{ kind: 'webhook', name: 'Ask ValueCo again' }])
  rt.clock.set(new Date())
  // Answered after the disk is full: each outcome meets it.
  const answerMs = 3000
  rt.provider.always({ status: 200, body: 'ok', delayMs: answerMs })
  const calls = rt.provider.calls.length
  const N = 20
  for (let i = 0; i < N; i++) await rt.start(webhook)
  const scheduler = rt.newScheduler({ pollIntervalMs: 200, timeoutMs: 10_000 }, undefined, { clock: systemClock })
  await scheduler.start()
  t.teardown(() => scheduler.stop(1000))
  while (rt.provider.calls.length < calls + 1) await sleep(20)
  // The outcomes of the calls under way meet the full disk.
  await own.query(`create table test_filler (x text) tablespace ${tablespace.name}`)
  const fill = `insert into test_filler select string_agg(md5(random()::text), '') from generate_series(1, 2000) g, generate_series(1, 16) h group by h`
  await t.rejects(async () => { for (;;) await own.query(fill) }, { code: '53100' }, 'the disk is full')
  await t.rejects(async () => { for (;;) await own.query(`insert into test_filler values ('x')`) }, { code: '53100' }, 'to its last page')
  const statuses = new Set<number>()
  // A start that fits in the free room left in its tables' pages is made: they fill up too.
  for (let i = 0; i < 200 && statuses.size < 2; i++) {
    const response = await start()
    statuses.add(response.statusCode)
    if (response.statusCode !== 201) checkUnavailable(t, response)
  }
  t.ok(statuses.has(503), `a start meets the full disk (${[...statuses].join(', ')})`)
  // Every call answered while the disk is full: their outcomes cannot all be written.
  while (rt.provider.calls.length < calls + N) await sleep(20)
  await sleep(answerMs + 500)
  const whileFull = await succeededOf(webhook)
  t.ok(whileFull < N, `the full disk refused outcomes (${whileFull} of ${N} written while it was full)`)
  await own.query('drop table test_filler')
  const back = Date.now()
  const succeeded = () => succeededOf(webhook)
  while ((await succeeded()) < N && Date.now() - back < 20_000) await sleep(100)
  t.equal(await succeeded(), N, `all ${N} deliveries succeeded ${Date.now() - back} ms after space came back`)
  t.equal(rt.provider.calls.length, calls + N, 'each was called once')
  t.equal((await start()).statusCode, 201, 'and a start is made again, without a restart')
})
