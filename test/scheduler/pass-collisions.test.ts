import t from 'tap'
import { systemClock } from '../../src/adapters/clock.js'
import { sql } from '../../src/db/kysely.js'
import { setupRuntime } from '../helpers/runtime.js'

// A scheduler pass that collides with another process's transaction (a deadlock Postgres ends it by, as
// a newer version's migrations did in a rolling deploy) is run again: a warning, not an error.
const rt = await setupRuntime(t)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

t.test('a pass ended as a deadlock is logged as a warning and run again', async (t) => {
  // Each claim's lease write is refused as a deadlock's victim until the flag is lifted.
  await sql`create table test_collide (on_ boolean not null)`.execute(rt.db)
  await sql`insert into test_collide values (true)`.execute(rt.db)
  await sql.raw(`create function test_collide() returns trigger language plpgsql as $$
    begin
      if (select on_ from test_collide) then raise exception 'deadlock detected' using errcode = 'deadlock_detected'; end if;
      return new;
    end $$`).execute(rt.db)
  await sql`create trigger test_collide before update on deliveries for each row execute function test_collide()`.execute(rt.db)
  t.teardown(async () => {
    await sql`drop trigger if exists test_collide on deliveries`.execute(rt.db)
    await sql`drop function if exists test_collide()`.execute(rt.db)
    await sql`drop table if exists test_collide`.execute(rt.db)
  })

  const lines: { level: 'warn' | 'error'; msg: string }[] = []
  const log = { info() {}, warn: (_context: object, msg: string) => lines.push({ level: 'warn', msg }), error: (_context: object, msg: string) => lines.push({ level: 'error', msg }) }
  rt.clock.set(new Date())
  const instance = await rt.start(await rt.template([{ kind: 'webhook', name: 'Ask ValueCo' }]))
  const scheduler = rt.newScheduler({ pollIntervalMs: 50 }, log, { clock: systemClock })
  await scheduler.start()
  t.teardown(() => scheduler.stop(1000))
  for (let i = 0; i < 100 && lines.length === 0; i++) await sleep(20)
  await sql`update test_collide set on_ = false`.execute(rt.db)
  for (let i = 0; i < 200 && rt.provider.calls.length === 0; i++) await sleep(20)

  t.match(lines[0], { level: 'warn', msg: 'scheduler pass collided with another transaction; retrying shortly' }, 'a warning')
  t.same(lines.filter((line) => line.level === 'error'), [], 'no error')
  t.equal(rt.provider.calls.length, 1, 'the call is made once the pass runs again')
  t.equal(rt.provider.calls[0]?.query.processId, instance.id)
})

t.test('a chore ended as a deadlock is logged as a warning and runs again', async (t) => {
  // Each write of a step is refused as a deadlock's victim until the flag is lifted.
  await sql`create table test_collide_steps (on_ boolean not null)`.execute(rt.db)
  await sql`insert into test_collide_steps values (false)`.execute(rt.db)
  await sql.raw(`create function test_collide_steps() returns trigger language plpgsql as $$
    begin
      if (select on_ from test_collide_steps) then raise exception 'deadlock detected' using errcode = 'deadlock_detected'; end if;
      return new;
    end $$`).execute(rt.db)
  await sql`create trigger test_collide_steps before update on instance_steps for each row execute function test_collide_steps()`.execute(rt.db)
  t.teardown(async () => {
    await sql`drop trigger if exists test_collide_steps on instance_steps`.execute(rt.db)
    await sql`drop function if exists test_collide_steps()`.execute(rt.db)
    await sql`drop table if exists test_collide_steps`.execute(rt.db)
  })
  const templateId = await rt.template([
    { kind: 'task', name: 'Call the owner' },
    { kind: 'task', name: 'Call again', start: { mode: 'daysAfterPrevious', days: 1 } }
  ])
  const instance = await rt.start(templateId)
  t.equal((await rt.api.post(`/v1/process-instances/${instance.id}/advance`, { outcome: 'done' })).statusCode, 200)
  await sql`update test_collide_steps set on_ = true`.execute(rt.db)
  rt.clock.advance(25 * 3_600_000)

  const lines: { level: 'warn' | 'error'; msg: string }[] = []
  const log = { info() {}, warn: (_context: object, msg: string) => lines.push({ level: 'warn', msg }), error: (_context: object, msg: string) => lines.push({ level: 'error', msg }) }
  const scheduler = rt.newScheduler({}, log)
  await scheduler.runOnce()
  t.ok(lines.some((line) => line.level === 'warn' && /collided with another transaction/.test(line.msg)), `a warning: ${JSON.stringify(lines)}`)
  t.same(lines.filter((line) => line.level === 'error'), [], 'no error')

  await sql`update test_collide_steps set on_ = false`.execute(rt.db)
  await scheduler.runOnce()
  t.equal((await rt.instance(instance.id)).steps[1].state, 'due', 'the step starts once the chore runs again')
})
