import { sql } from '../../src/db/kysely.js'
import t, { type Test } from 'tap'
import { DELETION_LEFT_AFTER_MS, finishTenantDeletions } from '../../src/scheduler/finish-tenant-deletions.js'
import { HOUR, MINUTE } from '../helpers/clock.js'
import { holdRow, waitForLockWait } from '../helpers/database.js'
import { heldDeletion } from '../helpers/deletion.js'
import { setupRuntime, type RuntimeTenant } from '../helpers/runtime.js'

// A tenant's deletion cut off between its parts (a restart, a 503) leaves the tenant marked with part
// of what it had; a worker finishes it once it has been left marked DELETION_LEFT_AFTER_MS.
const rt = await setupRuntime(t)

/** A tenant with a running process, as its deletion finds it. */
async function tenantWithProcess(name: string): Promise<RuntimeTenant> {
  const tenant = await rt.newRuntimeTenant(name)
  await tenant.start(await tenant.template([{ kind: 'task', name: 'Call the owner' }]))
  return tenant
}

/** Marks the tenant as a deletion begun `ago` before the clock's now would have. */
async function markedAgo(tenantId: string, ago: number): Promise<void> {
  await sql`update tenants set deleting_since = ${new Date(rt.clock.now().getTime() - ago)} where id = ${tenantId}`.execute(rt.db)
}

/** The tenant's rows left in the tables its deletion empties, by table. */
async function left(tenantId: string): Promise<Record<string, number>> {
  const { rows } = await sql<{ table: string; n: number }>`
    select 'tenants' as table, count(*)::int as n from tenants where id = ${tenantId}
    union all select 'process_instances', count(*)::int from process_instances where tenant_id = ${tenantId}
    union all select 'instance_steps', count(*)::int from instance_steps where tenant_id = ${tenantId}
    union all select 'activities', count(*)::int from activities where tenant_id = ${tenantId}
    union all select 'users', count(*)::int from users where tenant_id = ${tenantId}
    union all select 'properties', count(*)::int from properties where tenant_id = ${tenantId}
    union all select 'template_steps', count(*)::int from template_steps where tenant_id = ${tenantId}
  `.execute(rt.db)
  return Object.fromEntries(rows.filter((r) => r.n > 0).map((r) => [r.table, r.n]))
}

const noErrors = (t: Test) => (error: unknown, id: string) => t.fail(`the deletion of ${id} failed: ${String(error)}`)

t.test('a deletion left marked ten minutes is finished, whatever its parts left; one marked less long, and a tenant not marked, stay', async (t) => {
  const cut = await tenantWithProcess('Cut Off GmbH')
  const recent = await tenantWithProcess('Recent GmbH')
  const kept = await tenantWithProcess('Kept GmbH')
  await markedAgo(cut.tenant.id, DELETION_LEFT_AFTER_MS)
  await markedAgo(recent.tenant.id, DELETION_LEFT_AFTER_MS - 1000)
  // The parts that went before the cut: its activities.
  await sql`delete from activities where tenant_id = ${cut.tenant.id}`.execute(rt.db)
  const keptBefore = await left(kept.tenant.id)

  t.equal(await finishTenantDeletions(rt.db, rt.clock.now(), { onError: noErrors(t) }), 1, 'one tenant went')
  t.same(await left(cut.tenant.id), {}, 'nothing of the cut-off tenant is left')
  t.equal((await rt.operator.get(`/v1/tenants/${cut.tenant.id}`)).statusCode, 404)
  t.match(await left(recent.tenant.id), { tenants: 1, process_instances: 1 }, 'the tenant marked less long stays: its deletion may still be going')
  t.same(await left(kept.tenant.id), keptBefore, 'the tenant not marked keeps everything')

  rt.clock.advance(1000)
  t.equal(await finishTenantDeletions(rt.db, rt.clock.now(), { onError: noErrors(t) }), 1, 'a second later, the other goes too')
  t.same(await left(recent.tenant.id), {})
  t.same(await left(kept.tenant.id), keptBefore)
  t.equal(await finishTenantDeletions(rt.db, rt.clock.now(), { onError: noErrors(t) }), 0, 'then there is nothing to finish')
})

t.test('a deletion that fails on its own is reported and tried again later; the others are finished', async (t) => {
  const stuck = await tenantWithProcess('Stuck GmbH')
  const other = await tenantWithProcess('Other GmbH')
  await markedAgo(stuck.tenant.id, DELETION_LEFT_AFTER_MS + 2000)
  await markedAgo(other.tenant.id, DELETION_LEFT_AFTER_MS + 1000)
  await sql.raw(`
    create function refuse_tenant_delete() returns trigger language plpgsql as $$
    begin
      if old.id = '${stuck.tenant.id}' then raise exception 'this tenant cannot be deleted'; end if;
      return old;
    end $$;
    create trigger refuse_tenant_delete before delete on tenants for each row execute function refuse_tenant_delete();
  `).execute(rt.db)
  const dropTrigger = () => sql.raw('drop trigger refuse_tenant_delete on tenants; drop function refuse_tenant_delete()').execute(rt.db)
  t.teardown(async () => { await dropTrigger().catch(() => undefined) })

  const failures: { error: unknown; id: string }[] = []
  t.equal(await finishTenantDeletions(rt.db, rt.clock.now(), { onError: (error, id) => failures.push({ error, id }) }), 1, 'the other tenant went')
  t.same(await left(other.tenant.id), {})
  t.match(failures, [{ id: stuck.tenant.id, error: { message: /cannot be deleted/ } }], 'the stuck one is reported, by its id')
  t.match(await left(stuck.tenant.id), { tenants: 1 }, 'and stays marked')

  await dropTrigger()
  t.equal(await finishTenantDeletions(rt.db, rt.clock.now(), { onError: noErrors(t) }), 1, 'once it can go, the next pass finishes it')
  t.same(await left(stuck.tenant.id), {})
})

t.test('a deletion still going when a worker comes to it: the two take turns, the tenant goes once, neither fails', async (t) => {
  const going = await tenantWithProcess('Slow GmbH')
  // The request's deletion marks the tenant and waits for its turn; by the worker's clock it was marked long ago.
  const request = await heldDeletion(rt, going.tenant.id)
  await markedAgo(going.tenant.id, DELETION_LEFT_AFTER_MS)
  const worker = finishTenantDeletions(rt.db, rt.clock.now(), { onError: noErrors(t) })
  await waitForLockWait(rt.db, 2)
  const answer = await request.finish()
  const finished = await worker
  t.ok([204, 404].includes(answer.statusCode), `the request answers 204 or 404 (${answer.statusCode})`)
  t.equal(finished + (answer.statusCode === 204 ? 1 : 0), 1, 'one of the two deleted the tenant')
  t.same(await left(going.tenant.id), {})
})

t.test('a worker that is stopping stops a large tenant\'s deletion between two parts; the next pass finishes it', async (t) => {
  const large = await tenantWithProcess('Large GmbH')
  await sql`insert into activities (tenant_id, id, kind, message)
    select ${large.tenant.id}, gen_random_uuid(), 'note', 'history ' || n from generate_series(1, 2500) n`.execute(rt.db)
  await markedAgo(large.tenant.id, DELETION_LEFT_AFTER_MS)
  // The second part's first row is held by another transaction, so the second part waits for it.
  const { rows: [second] } = await sql<{ id: string }>`select id from activities where tenant_id = ${large.tenant.id} order by id offset 1000 limit 1`.execute(rt.db)
  const held = await holdRow(rt.db, sql`select id from activities where tenant_id = ${large.tenant.id} and id = ${second!.id} for update`)
  const stopping = new AbortController()
  const pass = finishTenantDeletions(rt.db, rt.clock.now(), { signal: stopping.signal, onError: noErrors(t) })
  await waitForLockWait(rt.db)
  stopping.abort()
  await held.release()
  await t.rejects(pass, { name: 'AbortError' }, 'the pass ends as the worker stops')
  const rest = await left(large.tenant.id)
  t.match(rest, { tenants: 1, process_instances: 1 }, 'the tenant is left, marked, with its processes')
  t.ok(rest.activities! > 0 && rest.activities! < 2500, `the parts before the stop went, the rest stayed (${rest.activities} activities left)`)

  t.equal(await finishTenantDeletions(rt.db, rt.clock.now(), { onError: noErrors(t) }), 1, 'the next pass finishes it')
  t.same(await left(large.tenant.id), {})
})

t.test('the running worker finishes a cut-off deletion when it starts, and looks again a minute later', async (t) => {
  const logged: string[] = []
  const log = { info: (_: object, message: string) => { logged.push(message) }, warn() {}, error: (context: object, message: string) => { t.fail(`${message}: ${JSON.stringify(context)}`) } }
  const first = await tenantWithProcess('First Cut GmbH')
  const second = await tenantWithProcess('Second Cut GmbH')
  await markedAgo(first.tenant.id, DELETION_LEFT_AFTER_MS)
  const gone = async (tenantId: string) => {
    for (let i = 0; i < 500; i++) {
      if ((await left(tenantId)).tenants === undefined) return true
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    return false
  }
  const scheduler = rt.newScheduler({ pollIntervalMs: 20 }, log)
  t.teardown(() => scheduler.stop(1000))
  await scheduler.start()
  t.ok(await gone(first.tenant.id), 'the tenant left marked goes as the worker starts')
  t.ok(logged.includes('finished the deletion of a tenant that was left marked'), 'and the worker says so')

  await markedAgo(second.tenant.id, 0)
  rt.clock.advance(DELETION_LEFT_AFTER_MS - MINUTE)
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.match(await left(second.tenant.id), { tenants: 1 }, 'a deletion marked nine minutes ago stays')
  rt.clock.advance(MINUTE)
  t.ok(await gone(second.tenant.id), 'at ten minutes, the worker\'s next look finishes it')
  await scheduler.stop(1000)
})

// A review found that the ten oldest marked tenants, if their deletions always failed, were taken again
// on every pass, and a tenant marked after them was never finished.
t.test('a worker leaves out a while the tenants whose deletion failed, so that those marked after them are finished', async (t) => {
  const stuck: string[] = []
  for (let i = 0; i < 10; i++) {
    const tenant = await rt.newTenant({ name: `Always Stuck ${i}` })
    await markedAgo(tenant.id, DELETION_LEFT_AFTER_MS + 10_000 - i)
    stuck.push(tenant.id)
  }
  const later = await tenantWithProcess('Marked Later GmbH')
  await markedAgo(later.tenant.id, DELETION_LEFT_AFTER_MS)
  await sql.raw(`
    create function refuse_stuck_delete() returns trigger language plpgsql as $$
    begin
      if old.name like 'Always Stuck %' then raise exception 'this tenant cannot be deleted'; end if;
      return old;
    end $$;
    create trigger refuse_stuck_delete before delete on tenants for each row execute function refuse_stuck_delete();
  `).execute(rt.db)
  const dropTrigger = () => sql.raw('drop trigger refuse_stuck_delete on tenants; drop function refuse_stuck_delete()').execute(rt.db)
  const failed: string[] = []
  const log = { info() {}, warn() {}, error: (context: { tenantId?: string }) => { if (context.tenantId) failed.push(context.tenantId) } }
  const scheduler = rt.newScheduler({ pollIntervalMs: 20 }, log)
  t.teardown(() => scheduler.stop(1000))
  const until = async (done: () => Promise<boolean>) => {
    for (let i = 0; i < 500 && !(await done()); i++) await new Promise((resolve) => setTimeout(resolve, 10))
    return done()
  }
  await scheduler.start()
  t.ok(await until(async () => failed.length >= 10), 'the first pass tries the ten oldest, and each fails')
  t.same([...failed].sort(), [...stuck].sort())
  t.match(await left(later.tenant.id), { tenants: 1 }, 'the tenant marked later waits its turn')
  rt.clock.advance(MINUTE)
  t.ok(await until(async () => (await left(later.tenant.id)).tenants === undefined), 'a minute later the worker leaves the failed ones out and finishes it')
  t.equal(failed.length, 10, 'the failed ones were not tried again')
  // Once they can go, the worker tries them again an hour after they failed (and they leave the next test nothing).
  await dropTrigger()
  rt.clock.advance(HOUR - 2 * MINUTE)
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.match(await left(stuck[0]!), { tenants: 1 }, 'not before the hour is over')
  rt.clock.advance(2 * MINUTE)
  t.ok(await until(async () => (await Promise.all(stuck.map(left))).every((rows) => rows.tenants === undefined)), 'an hour on, they are finished')
  t.equal(failed.length, 10, 'without failing again')
  await scheduler.stop(1000)
})

// A review found stop() waiting for the chore's part before the grace began to count: a part waiting for
// a lock held the stop past the grace, and the calls in flight were cut off only after it.
t.test('a worker that is stopping waits for a deletion\'s part no longer than its grace', async (t) => {
  const large = await tenantWithProcess('Held Part GmbH')
  await sql`insert into activities (tenant_id, id, kind, message)
    select ${large.tenant.id}, gen_random_uuid(), 'note', 'history ' || n from generate_series(1, 1500) n`.execute(rt.db)
  await markedAgo(large.tenant.id, DELETION_LEFT_AFTER_MS)
  // Another transaction holds one of the first part's rows: the part waits for it.
  const held = await holdRow(rt.db, sql`select id from activities where tenant_id = ${large.tenant.id} order by id limit 1 for update`)
  const scheduler = rt.newScheduler({ pollIntervalMs: 20 })
  await scheduler.start()
  await waitForLockWait(rt.db)
  const started = Date.now()
  const stopped = await Promise.race([scheduler.stop(300).then(() => 'stopped'), new Promise((resolve) => setTimeout(resolve, 5000, 'still waiting'))])
  const ms = Date.now() - started
  await held.release()
  t.equal(stopped, 'stopped', 'the stop ends while the part still waits')
  t.ok(ms < 2000, `within its grace and a little (${ms} ms)`)
  t.match(await left(large.tenant.id), { tenants: 1 }, 'the tenant is left, marked, for the next worker')
})
