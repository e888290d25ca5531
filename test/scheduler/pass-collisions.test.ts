import t, { type Test } from 'tap'
import { systemClock } from '../../src/adapters/clock.js'
import { sql } from '../../src/db/kysely.js'
import { setupRuntime } from '../helpers/runtime.js'

// A scheduler pass that collides with another process's transaction (a deadlock Postgres ends it by, as
// a newer version's migrations did in a rolling deploy) is run again: a warning, not an error.
const rt = await setupRuntime(t)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * While refusing, every update of `table` fails as a deadlock's victim would (SQLSTATE 40P01), through a
 * trigger dropped with the test; returns the switch.
 */
async function deadlocksOn(t: Test, table: 'deliveries' | 'instance_steps', refusing: boolean): Promise<(on: boolean) => Promise<void>> {
  const name = `test_collide_${table}`
  await sql.raw(`create table ${name} (on_ boolean not null)`).execute(rt.db)
  await sql.raw(`insert into ${name} values (${refusing})`).execute(rt.db)
  await sql.raw(`create function ${name}() returns trigger language plpgsql as $$
    begin
      if (select on_ from ${name}) then raise exception 'deadlock detected' using errcode = 'deadlock_detected'; end if;
      return new;
    end $$`).execute(rt.db)
  await sql.raw(`create trigger ${name} before update on ${table} for each row execute function ${name}()`).execute(rt.db)
  t.teardown(async () => {
    await sql.raw(`drop trigger if exists ${name} on ${table}`).execute(rt.db)
    await sql.raw(`drop function if exists ${name}()`).execute(rt.db)
    await sql.raw(`drop table if exists ${name}`).execute(rt.db)
  })
  return async (on) => { await sql.raw(`update ${name} set on_ = ${on}`).execute(rt.db) }
}

/** A scheduler's log, its warnings and errors kept. */
function recordingLog() {
  const lines: { level: 'warn' | 'error'; msg: string }[] = []
  const log = { info() {}, warn: (_context: object, msg: string) => lines.push({ level: 'warn', msg }), error: (_context: object, msg: string) => lines.push({ level: 'error', msg }) }
  return { lines, log }
}

t.test('a pass ended as a deadlock is logged as a warning and run again', async (t) => {
  // Each claim's lease write is refused as a deadlock's victim until the switch is turned off.
  const refuse = await deadlocksOn(t, 'deliveries', true)
  const { lines, log } = recordingLog()
  rt.clock.set(new Date())
  const instance = await rt.start(await rt.template([{ kind: 'webhook', name: 'Ask ValueCo' }]))
  const scheduler = rt.newScheduler({ pollIntervalMs: 50 }, log, { clock: systemClock })
  await scheduler.start()
  t.teardown(() => scheduler.stop(1000))
  for (let i = 0; i < 100 && lines.length === 0; i++) await sleep(20)
  await refuse(false)
  for (let i = 0; i < 200 && rt.provider.calls.length === 0; i++) await sleep(20)

  t.match(lines[0], { level: 'warn', msg: 'scheduler pass collided with another transaction; retrying shortly' }, 'a warning')
  t.same(lines.filter((line) => line.level === 'error'), [], 'no error')
  t.equal(rt.provider.calls.length, 1, 'the call is made once the pass runs again')
  t.equal(rt.provider.calls[0]?.query.processId, instance.id)
})

t.test('a chore ended as a deadlock is logged as a warning and runs again', async (t) => {
  // Each write of a step is refused as a deadlock's victim while the switch is on.
  const refuse = await deadlocksOn(t, 'instance_steps', false)
  const templateId = await rt.template([
    { kind: 'task', name: 'Call the owner' },
    { kind: 'task', name: 'Call again', start: { mode: 'daysAfterPrevious', days: 1 } }
  ])
  const instance = await rt.start(templateId)
  t.equal((await rt.api.post(`/v1/process-instances/${instance.id}/advance`, { outcome: 'done' })).statusCode, 200)
  await refuse(true)
  rt.clock.advance(25 * 3_600_000)

  const { lines, log } = recordingLog()
  const scheduler = rt.newScheduler({}, log)
  await scheduler.runOnce()
  t.ok(lines.some((line) => line.level === 'warn' && /collided with another transaction/.test(line.msg)), `a warning: ${JSON.stringify(lines)}`)
  t.same(lines.filter((line) => line.level === 'error'), [], 'no error')

  await refuse(false)
  await scheduler.runOnce()
  t.equal((await rt.instance(instance.id)).steps[1].state, 'due', 'the step starts once the chore runs again')
})
