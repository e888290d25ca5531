import t, { type Test } from 'tap'
import { setupApp } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { holdRow, waitForLockWait } from '../../helpers/database.js'
import { buildWorld } from '../../helpers/world.js'
import { sql } from '../../../src/db/kysely.js'
import { PART_ROWS } from '../../../src/modules/tenants/repository.js'
import { startProcessIn } from '../../../src/modules/instances/service.js'
import { openPostgres, type DB } from '../../../src/db/connect.js'

t.test('tenants and their API keys', async (t) => {
  const { operator, anonymous, as } = await setupApp(t)

  const created = await operator.post('/v1/tenants', { name: 'Muster Immobilien GmbH', webId: '48213' })
  t.equal(created.statusCode, 201)
  t.match(created.data, { id: String, name: 'Muster Immobilien GmbH', webId: '48213', timeZone: 'Europe/Berlin' })
  const id = created.data.id as string

  t.equal((await operator.get(`/v1/tenants/${id}`)).data.webId, '48213')
  const updated = await operator.patch(`/v1/tenants/${id}`, { timeZone: 'America/New_York' })
  t.equal(updated.data.timeZone, 'America/New_York')

  assertProblem(t, await operator.post('/v1/tenants', { name: 'Copy', webId: '48213' }), 409, /webId/)
  assertProblem(t, await operator.post('/v1/tenants', { name: 'X', webId: 'x1', timeZone: 'Mars/Olympus' }), 422, /time zone/)
  // A UTC offset is no IANA zone (newer Node versions take one as a time zone; Node 20 does not).
  for (const timeZone of ['+01:00', '-0500', '+01']) {
    assertProblem(t, await operator.post('/v1/tenants', { name: 'X', webId: 'x1', timeZone }), 422, /is not an IANA time zone/)
  }
  for (const timeZone of ['Etc/GMT+1', 'EST5EDT', 'America/Argentina/Buenos_Aires', 'UTC']) {
    t.equal((await operator.patch(`/v1/tenants/${id}`, { timeZone })).statusCode, 200, `${timeZone} is a zone`)
  }
  t.equal((await operator.patch(`/v1/tenants/${id}`, { timeZone: 'America/New_York' })).statusCode, 200)
  assertProblem(t, await operator.post('/v1/tenants', { name: 42, webId: 'x2' }), 400, /\/body\/name/)
  assertProblem(t, await operator.post('/v1/tenants', { webId: 'x3' }), 400, /name/)
  assertProblem(t, await operator.post('/v1/tenants', { name: 'X', webId: 'x4', extra: true }), 400, /extra/)
  assertProblem(t, await operator.get('/v1/tenants/not-a-uuid'), 400)
  assertProblem(t, await operator.get('/v1/tenants/00000000-0000-4000-8000-000000000000'), 404)

  const key = await operator.post(`/v1/tenants/${id}/api-keys`, { name: 'crm' })
  t.equal(key.statusCode, 201)
  t.match(key.data, { name: 'crm', key: /^btk_/, prefix: String, revokedAt: null })
  const keys = await operator.get(`/v1/tenants/${id}/api-keys`)
  t.equal(keys.data.items.length, 1)
  t.notOk('key' in keys.data.items[0], 'list never shows the secret')
  const located = await operator.get(key.headers.location as string)
  t.equal(located.statusCode, 200, 'the Location of a new key answers a GET')
  t.same(located.data, keys.data.items[0], 'with the key as listed, without its secret')
  assertProblem(t, await operator.get(`/v1/tenants/${id}/api-keys/00000000-0000-4000-8000-000000000000`), 404)

  const tenantClient = as(key.data.key)
  t.equal((await tenantClient.get('/v1/users')).statusCode !== 401, true, 'the new key works')
  assertProblem(t, await tenantClient.get('/v1/tenants'), 403)
  assertProblem(t, await anonymous.get('/v1/tenants'), 401)
  assertProblem(t, await as('btk_wrong').get('/v1/tenants'), 401)

  const revoked = await operator.delete(`/v1/tenants/${id}/api-keys/${key.data.id}`)
  t.equal(revoked.statusCode, 204)
  assertProblem(t, await tenantClient.get('/v1/users'), 401, /revoked/)
  t.match((await operator.get(key.headers.location as string)).data, { revokedAt: String }, 'a revoked key shows when it was revoked')
  assertProblem(t, await operator.delete(`/v1/tenants/${id}/api-keys/00000000-0000-4000-8000-000000000000`), 404)

  const second = await operator.post(`/v1/tenants/${id}/api-keys`, { name: 'erp' })
  t.equal((await as(second.data.key).get('/v1/users')).statusCode, 200, 'the second key works (and is now known to this process)')
  t.equal((await operator.delete(`/v1/tenants/${id}`)).statusCode, 204)
  assertProblem(t, await operator.get(`/v1/tenants/${id}`), 404)
  assertProblem(t, await as(second.data.key).get('/v1/users'), 401) // a deleted tenant's key stops working at once
})

t.test('tenant lists page with an opaque cursor', async (t) => {
  const { operator } = await setupApp(t)
  for (let i = 0; i < 5; i++) await operator.post('/v1/tenants', { name: `T${i}`, webId: `page${i}` })
  const first = await operator.get('/v1/tenants?limit=2')
  t.equal(first.data.items.length, 2)
  t.type(first.data.nextCursor, 'string')
  const seen = [...first.data.items]
  let cursor = first.data.nextCursor
  while (cursor) {
    const page = await operator.get(`/v1/tenants?limit=2&cursor=${cursor}`)
    seen.push(...page.data.items)
    cursor = page.data.nextCursor
  }
  t.same(seen.map((x) => x.webId), ['page0', 'page1', 'page2', 'page3', 'page4'])
  assertProblem(t, await operator.get('/v1/tenants?cursor=garbage'), 400)
  assertProblem(t, await operator.get('/v1/tenants?limit=500'), 400)
})

t.test('a tenant with processes, records and history is deleted with everything it owns; another tenant keeps its own', async (t) => {
  const ctx = await setupApp(t)
  const world = await buildWorld(ctx)
  const other = await buildWorld(ctx)
  // A step ended and the next one started, so the process has a step with an assignee and one without.
  const skipped = await world.a.client.post(`/v1/process-instances/${world.instance.id}/advance`, { outcome: 'skipped' })
  t.equal(skipped.statusCode, 200, skipped.body)
  t.equal((await ctx.operator.delete(`/v1/tenants/${world.a.id}`)).statusCode, 204)
  const left = async (tenantId: string) => (await sql<{ table: string; n: number }>`
    select 'process_instances' as table, count(*)::int as n from process_instances where tenant_id = ${tenantId}
    union all select 'instance_steps', count(*)::int from instance_steps where tenant_id = ${tenantId}
    union all select 'deliveries', count(*)::int from deliveries where tenant_id = ${tenantId}
    union all select 'users', count(*)::int from users where tenant_id = ${tenantId}
    union all select 'properties', count(*)::int from properties where tenant_id = ${tenantId}
    union all select 'template_steps', count(*)::int from template_steps where tenant_id = ${tenantId}
  `.execute(ctx.db)).rows.filter((r) => r.n > 0).map((r) => r.table)
  t.same(await left(world.a.id), [], 'nothing of the tenant is left')
  t.same(await left(other.a.id), ['process_instances', 'instance_steps', 'deliveries', 'users', 'properties', 'template_steps'], 'the other tenant keeps its own')
  assertProblem(t, await ctx.operator.delete(`/v1/tenants/${world.a.id}`), 404)
})

t.test('a tenant whose template has a step for a named user is deleted (204)', async (t) => {
  const ctx = await setupApp(t)
  const world = await buildWorld(ctx)
  const step = await world.a.client.post(`/v1/process-templates/${world.template.id}/steps`, { kind: 'task', name: 'Ask Anna', responsibility: { user: world.user.id } })
  t.equal(step.statusCode, 201, step.body)
  t.equal((await world.a.client.post(`/v1/process-templates/${world.template.id}/copy`, {})).statusCode, 201)
  const deleted = await ctx.operator.delete(`/v1/tenants/${world.a.id}`)
  t.equal(deleted.statusCode, 204, deleted.body)
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from template_steps where tenant_id = ${world.a.id}`.execute(ctx.db)
  t.equal(rows[0]?.n, 0, 'no step of its templates is left')
})

t.test('a tenant being deleted is marked first: its key is refused (401), also where it was known, its apiClaim too (403), it gets no new key (409), the operator sees deletingSince, and it is deleted (204)', async (t) => {
  const ctx = await setupApp(t)
  const world = await buildWorld(ctx)
  const b = await ctx.newTenant()
  t.equal((await world.a.client.get('/v1/process-instances')).statusCode, 200, 'the key works, and this process knows it')
  const claimed = ctx.as(world.claim)
  t.equal((await claimed.get(`/v1/properties/${world.property.id}`)).statusCode, 200, 'so does its apiClaim')
  t.equal((await ctx.operator.get(`/v1/tenants/${world.a.id}`)).data.deletingSince, null)
  // Another transaction holds the world's process, as an advance or a worker's batch does for a moment.
  const held = await holdRow(ctx.db, sql`select id from process_instances where tenant_id = ${world.a.id} and id = ${world.instance.id} for update`)
  const deleting = ctx.operator.delete(`/v1/tenants/${world.a.id}`)
  t.ok(await someoneWaitsForALock(ctx), 'the deletion waits for the held process')
  assertProblem(t, await world.a.client.post('/v1/process-instances', {
    templateId: world.template.id, responsibleUserId: world.user.id, propertyId: world.property.id
  }), 401, /unknown or has been revoked/)
  assertProblem(t, await world.a.client.get('/v1/process-instances'), 401)
  assertProblem(t, await claimed.get(`/v1/properties/${world.property.id}`), 403, /no longer active for the tenant/)
  t.equal((await b.client.get('/v1/process-instances')).statusCode, 200, 'another tenant\'s key works')
  const read = await ctx.operator.get(`/v1/tenants/${world.a.id}`)
  t.equal(read.data.deletingSince, ctx.clock.now().toISOString(), 'the operator reads when its deletion began')
  const listed = (await ctx.operator.get('/v1/tenants')).data.items as { id: string; deletingSince: string | null }[]
  t.same(listed.filter((tenant) => tenant.deletingSince !== null).map((tenant) => tenant.id), [world.a.id], 'and sees it in the list')
  const keys = (await ctx.operator.get(`/v1/tenants/${world.a.id}/api-keys`)).data.items.length
  assertProblem(t, await ctx.operator.post(`/v1/tenants/${world.a.id}/api-keys`, { name: 'late' }), 409, /is being deleted.*no new API key/)
  t.equal((await ctx.operator.get(`/v1/tenants/${world.a.id}/api-keys`)).data.items.length, keys, 'no key is made that would be refused')
  await held.release()
  const deleted = await deleting
  t.equal(deleted.statusCode, 204, deleted.body)
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from process_instances where tenant_id = ${world.a.id}`.execute(ctx.db)
  t.equal(rows[0]?.n, 0, 'no process of the tenant is left')
  assertProblem(t, await ctx.operator.delete(`/v1/tenants/${world.a.id}`), 404)
})

/** Whether `count` sessions (one by default) on this test's database come to wait for a lock within a few seconds. */
async function someoneWaitsForALock(ctx: { db: DB }, count = 1): Promise<boolean> {
  for (let i = 0; i < 100; i += 1) {
    const { rows } = await sql<{ waiting: number }>`
      select count(*)::int as waiting from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`.execute(ctx.db)
    if ((rows[0]?.waiting ?? 0) >= count) return true
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return false
}

/**
 * A deletion of the tenant that deadlocks once with another transaction: that one holds the tenant's
 * rows (`hold`), lets the DELETE wait for them (`waits` names the wait), then asks for the deletion's
 * lock against another deletion: locks taken in opposite orders. Its deadlock_timeout is longer, so
 * the deletion's transaction is the one Postgres chooses to end it. Resolves with the DELETE's answer.
 */
async function deadlockedDeletion(
  t: Test, ctx: Awaited<ReturnType<typeof setupApp>>, tenantId: string, hold: (trx: DB) => Promise<void>, waits: string
): Promise<{ statusCode: number; body: string }> {
  let deleting: Promise<{ statusCode: number; body: string }> | undefined
  await ctx.db.transaction().execute(async (trx) => {
    await sql`set local deadlock_timeout = '60s'`.execute(trx)
    await hold(trx)
    deleting = ctx.operator.delete(`/v1/tenants/${tenantId}`)
    t.ok(await someoneWaitsForALock(ctx), waits)
    await sql`select pg_advisory_xact_lock(hashtextextended(${`tenant deletion ${tenantId}`}, 0))`.execute(trx)
  })
  return deleting!
}

t.test('ICU\'s own zone ids, no names of the zone database, answer 422: BST was Dhaka\'s time, AST Anchorage\'s, ART Cairo\'s; the database\'s short names are zones', async (t) => {
  const { operator } = await setupApp(t)
  const id = (await operator.post('/v1/tenants', { name: 'Muster Immobilien GmbH', webId: 'icu1' })).data.id as string
  // Node 20's ICU takes these 25 (Java's old ids) and 13 SystemV/ ids; the zone database holds none of them.
  const icu = ['ACT', 'AET', 'AGT', 'ART', 'AST', 'BET', 'BST', 'CAT', 'CNT', 'CST', 'CTT', 'EAT', 'ECT', 'IET', 'IST', 'JST', 'MIT', 'NET', 'NST', 'PLT', 'PNT', 'PRT', 'PST', 'SST', 'VST']
  for (const timeZone of [...icu, 'bst', 'SystemV/AST4', 'systemv/pst8pdt']) {
    assertProblem(t, await operator.post('/v1/tenants', { name: 'X', webId: 'icu2', timeZone }), 422, /is not an IANA time zone/)
    assertProblem(t, await operator.patch(`/v1/tenants/${id}`, { timeZone }), 422, /is not an IANA time zone/)
  }
  t.equal((await operator.get(`/v1/tenants/${id}`)).data.timeZone, 'Europe/Berlin', 'the zone unchanged')
  for (const timeZone of ['CET', 'EET', 'EST', 'GMT', 'HST', 'MET', 'MST', 'PRC', 'ROC', 'ROK', 'UCT', 'UTC', 'WET', 'GB', 'NZ', 'GMT0', 'Zulu']) {
    t.equal((await operator.patch(`/v1/tenants/${id}`, { timeZone })).data.timeZone, timeZone, `${timeZone} is a zone of the database`)
  }
})

t.test('a tenant PATCH that changes nothing keeps updatedAt', async (t) => {
  const { operator, clock } = await setupApp(t)
  const created = (await operator.post('/v1/tenants', { name: 'Muster Immobilien GmbH', webId: '48213', timeZone: 'Europe/Vienna' })).data
  const url = `/v1/tenants/${created.id}`
  clock.advance(60_000)
  for (const body of [{ name: 'Muster Immobilien GmbH' }, { webId: '48213', timeZone: 'Europe/Vienna' }]) {
    const same = await operator.patch(url, body)
    t.equal(same.statusCode, 200, JSON.stringify(body))
    t.same(same.data, created, `${JSON.stringify(body)}: the tenant as it was`)
  }
  t.same((await operator.get(url)).data, created, 'stored unchanged')
  const changed = await operator.patch(url, { timeZone: 'Europe/Berlin' })
  t.equal(changed.data.updatedAt, clock.now().toISOString(), 'a change still moves updatedAt')
})

t.test('a time zone is stored in the zone database\'s case, whatever its case as given, a link by its own name; the same zone in another case changes nothing', async (t) => {
  const { operator, db, clock } = await setupApp(t)
  const created = await operator.post('/v1/tenants', { name: 'Muster Immobilien GmbH', webId: 'zone1', timeZone: 'europe/vienna' })
  t.equal(created.data.timeZone, 'Europe/Vienna')
  const url = `/v1/tenants/${created.data.id}`
  t.equal((await operator.patch(url, { timeZone: 'america/new_york' })).data.timeZone, 'America/New_York')
  // A link keeps its name whatever ICU calls its zone (Node 20: Asia/Calcutta, America/New_York).
  t.equal((await operator.patch(url, { timeZone: 'Asia/Kolkata' })).data.timeZone, 'Asia/Kolkata')
  t.equal((await operator.patch(url, { timeZone: 'US/Eastern' })).data.timeZone, 'US/Eastern')
  const berlin = await operator.patch(url, { timeZone: 'europe/berlin' })
  t.equal(berlin.data.timeZone, 'Europe/Berlin')
  const row = await db.selectFrom('tenants').select('time_zone').where('id', '=', created.data.id).executeTakeFirstOrThrow()
  t.equal(row.time_zone, 'Europe/Berlin', 'stored so')
  clock.advance(60_000)
  t.same((await operator.patch(url, { timeZone: 'EUROPE/BERLIN' })).data, berlin.data, 'the same zone: the tenant as it was, updatedAt too')
})

t.test('a tenant being deleted starts no process: a follow-up\'s or an autostart\'s start answers 409, and nothing is added to what goes', async (t) => {
  const ctx = await setupApp(t)
  const world = await buildWorld(ctx)
  const input = { templateId: world.template.id, responsibleUserId: world.user.id, propertyId: world.property.id }
  // The deletion has marked the tenant and waits for a key row another transaction holds.
  const held = await holdRow(ctx.db, sql`select id from api_keys where tenant_id = ${world.a.id} and id = ${world.keyId} for update`)
  const deleting = ctx.operator.delete(`/v1/tenants/${world.a.id}`)
  t.ok(await someoneWaitsForALock(ctx), 'the deletion waits for the held key')
  // The core of every start (the API's, a follow-up step's, an autostart's), as the scheduler and a record write run it.
  await t.rejects(startProcessIn(ctx.db, ctx.clock, world.a.id, input), { status: 409, message: /is being deleted/ })
  await t.rejects(startProcessIn(ctx.db, ctx.clock, world.a.id, input, { idempotencyKey: 'while-deleting' }), { status: 409, message: /is being deleted/ })
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from process_instances where tenant_id = ${world.a.id}`.execute(ctx.db)
  t.equal(rows[0]?.n, 1, 'only the process of before')
  await held.release()
  t.equal((await deleting).statusCode, 204)
})

t.test('a tenant\'s or an API key\'s name of whitespace only answers 422 at /body/name, on create and update', async (t) => {
  const { operator } = await setupApp(t)
  const id = (await operator.post('/v1/tenants', { name: 'Muster Immobilien GmbH', webId: 'blank1' })).data.id as string
  for (const name of [' ', '\t\n', '\u00a0\u3000']) {
    for (const response of [
      await operator.post('/v1/tenants', { name, webId: 'blank2' }),
      await operator.patch(`/v1/tenants/${id}`, { name }),
      await operator.post(`/v1/tenants/${id}/api-keys`, { name })
    ]) {
      assertProblem(t, response, 422, /may not be blank/)
      t.same(response.data.errors, [{ pointer: '/body/name', detail: 'must not be blank (whitespace only)' }], JSON.stringify(name))
    }
  }
  t.equal((await operator.get(`/v1/tenants/${id}`)).data.name, 'Muster Immobilien GmbH', 'unchanged')
  t.same((await operator.get(`/v1/tenants/${id}/api-keys`)).data.items, [], 'no key was made')
  t.equal((await operator.post('/v1/tenants', { name: ' Muster ', webId: 'blank3' })).statusCode, 201, 'a name with spaces around it is a name')
})

t.test('a key created while its tenant is being deleted answers 404, as after the deletion', async (t) => {
  const { operator, db } = await setupApp(t)
  const tenant = await operator.post('/v1/tenants', { name: 'Going', webId: 'going-1' })
  let racing: ReturnType<typeof operator.post> | undefined
  // The tenant is deleted, not yet committed, when the request checks it: its insert's foreign key waits
  // on the tenant's row, and finds it gone once the deletion commits.
  await db.transaction().execute(async (trx) => {
    await sql`delete from tenants where id = ${tenant.data.id}`.execute(trx)
    racing = operator.post(`/v1/tenants/${tenant.data.id}/api-keys`, { name: 'late' })
    await waitForLockWait(db)
  })
  assertProblem(t, await racing!, 404, /Tenant .* not found/i)
})

t.test('a key asked for as its tenant\'s deletion marks it answers 409, not a key refused from the start (201)', async (t) => {
  const { operator, db } = await setupApp(t)
  const tenant = await operator.post('/v1/tenants', { name: 'Marked', webId: 'marked-1' })
  let racing: ReturnType<typeof operator.post> | undefined
  // The deletion's mark is written, not yet committed, when the request checks the tenant.
  await db.transaction().execute(async (trx) => {
    await sql`update tenants set deleting_since = now() where id = ${tenant.data.id}`.execute(trx)
    racing = operator.post(`/v1/tenants/${tenant.data.id}/api-keys`, { name: 'late' })
    // Unheld, the request made its key at once; held, it waits for the mark.
    await Promise.race([waitForLockWait(db), racing])
  })
  assertProblem(t, await racing!, 409, /is being deleted/)
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from api_keys where tenant_id = ${tenant.data.id}`.execute(db)
  t.equal(rows[0]!.n, 0, 'no key was made')
})

t.test('a tenant too large for one statement within the statement timeout is deleted (204), all of it; another tenant keeps its own', async (t) => {
  // Deleted in one transaction, the cascade over these rows overran a 1 s statement timeout every
  // time: 503 "retry shortly", again and again, and nothing was ever deleted.
  const ctx = await setupApp(t, { DATABASE_STATEMENT_TIMEOUT_MS: '1000' })
  const world = await buildWorld(ctx)
  const other = await buildWorld(ctx)
  // Written by a connection without the timeout: copies of the world's rows, and history.
  const { db: setup } = openPostgres(ctx.databaseUrl, { poolMax: 1, statementTimeoutMs: 0 })
  t.teardown(() => setup.destroy())
  const a = world.a.id
  await sql`insert into users (tenant_id, id, name, email) select ${a}, gen_random_uuid(), 'U' || g, 'u' || g || '@a.example' from generate_series(1, 2000) g`.execute(setup)
  await sql`insert into properties (tenant_id, id, maintainer_user_id, fields)
    select ${a}, gen_random_uuid(), ${world.user.id}, '{"price": 1}' from generate_series(1, 40000)`.execute(setup)
  await sql`insert into addresses (tenant_id, id, fields) select ${a}, gen_random_uuid(), '{"name": "Owner"}' from generate_series(1, 20000)`.execute(setup)
  await sql`insert into process_templates (tenant_id, id, name, controller_user_id)
    select ${a}, gen_random_uuid(), 'T' || g, ${world.user.id} from generate_series(1, 200) g`.execute(setup)
  await sql`
    with copies as (
      select gen_random_uuid() as copy_id, p.* from process_instances p, generate_series(1, 5000)
      where p.tenant_id = ${a} and p.id = ${world.instance.id}
    ), processes as (
      insert into process_instances (tenant_id, id, template_id, template_name, responsible_user_id, controller_user_id, property_id)
      select tenant_id, copy_id, template_id, template_name, responsible_user_id, controller_user_id, property_id from copies
    )
    insert into instance_steps (tenant_id, id, instance_id, position, kind, name, start_mode, responsibility, refers_to_property, refers_to_address, service_id)
    select s.tenant_id, gen_random_uuid(), c.copy_id, s.position, s.kind, s.name, s.start_mode, s.responsibility, s.refers_to_property, s.refers_to_address, s.service_id
    from copies c join instance_steps s on s.tenant_id = c.tenant_id and s.instance_id = ${world.instance.id}
  `.execute(setup)
  await sql`
    with made as (
      insert into deliveries (tenant_id, id, service_id, source, property_id, status, finished_at)
      select ${a}, gen_random_uuid(), ${world.service.id}, 'trigger', ${world.property.id}, 'succeeded', now() from generate_series(1, 20000)
      returning tenant_id, id
    )
    insert into delivery_attempts (tenant_id, id, delivery_id, round, attempt_number, started_at, duration_ms, outcome)
    select tenant_id, gen_random_uuid(), id, 1, 1, now(), 5, 'succeeded' from made
  `.execute(setup)
  await sql`insert into activities (tenant_id, id, kind, message, property_id) select ${a}, gen_random_uuid(), 'note', 'history', ${world.property.id} from generate_series(1, 100000)`.execute(setup)
  await sql`insert into outbox_mails (tenant_id, id, dedupe_key, kind, to_address, subject, body)
    select ${a}, gen_random_uuid(), 'm' || g, 'deadline', 'anna@a.example', 'Late', 'A step is late.' from generate_series(1, 5000) g`.execute(setup)
  await sql`insert into autostart_runs (tenant_id, id, template_id, record_kind, record_id, occurrence, outcome)
    select ${a}, gen_random_uuid(), ${world.template.id}, 'property', gen_random_uuid(), 'created', 'started' from generate_series(1, 5000)`.execute(setup)

  const deleted = await ctx.operator.delete(`/v1/tenants/${a}`)
  t.equal(deleted.statusCode, 204, deleted.body)
  const left = async (tenantId: string) => (await sql<{ table: string; n: number }>`
    select c.relname as table, (xpath('/row/n/text()', query_to_xml(format('select count(*) as n from %I where tenant_id = %L', c.relname, ${tenantId}::text), false, true, '')))[1]::text::int as n
    from pg_class c join pg_attribute col on col.attrelid = c.oid and col.attname = 'tenant_id'
    where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'
    order by c.relname
  `.execute(setup)).rows.filter((r) => r.n > 0).map((r) => r.table)
  t.same(await left(a), [], 'nothing of the tenant is left in any table')
  t.same((await sql`select id from tenants where id = ${a}`.execute(setup)).rows, [], 'nor the tenant')
  t.same(await left(other.a.id), ['activities', 'addresses', 'api_keys', 'deliveries', 'instance_steps', 'process_instances', 'process_templates', 'properties', 'service_activations', 'template_steps', 'users'],
    'the other tenant keeps its own')
  assertProblem(t, await ctx.operator.delete(`/v1/tenants/${a}`), 404)
})

t.test('a large tenant is deleted (204) though a process of it started while its templates were going, after its processes went', async (t) => {
  const ctx = await setupApp(t)
  const world = await buildWorld(ctx)
  const a = world.a.id
  // More activities than one part: the tenant goes in parts.
  await sql`insert into activities (tenant_id, id, kind, message) select ${a}, gen_random_uuid(), 'note', 'history' from generate_series(1, ${PART_ROWS + 1})`.execute(ctx.db)
  // Once, as the first of its templates goes, a process of it starts (as a start or a follow-up would
  // that committed just then): the templates' part fails its foreign key check.
  // Once, as the first of its templates goes (after its processes went), a process of it appears, copied
  // from its process, as one that a start or a follow-up committed just then would: that part fails its
  // foreign key check. (The sequence counts outside the transaction, which that failure rolls back.)
  await sql.raw(`
    create sequence template_deletes;
    create table kept_process as select * from process_instances where tenant_id = '${a}';
    create function start_meanwhile() returns trigger language plpgsql as $$
    begin
      if nextval('template_deletes') = 1 then
        insert into process_instances (tenant_id, id, template_id, template_name, responsible_user_id, controller_user_id, property_id)
          select tenant_id, gen_random_uuid(), template_id, template_name, responsible_user_id, controller_user_id, property_id from kept_process;
      end if;
      return old;
    end $$;
    create trigger start_meanwhile before delete on process_templates for each row execute function start_meanwhile();
  `).execute(ctx.db)
  const deleted = await ctx.operator.delete(`/v1/tenants/${a}`)
  t.equal(deleted.statusCode, 204, deleted.body)
  const { rows: [deletes] } = await sql<{ n: string }>`select last_value as n from template_deletes`.execute(ctx.db)
  t.ok(Number(deletes?.n) > 1, 'the templates\' part met a process started meanwhile, and went again')
  const { rows } = await sql<{ n: number }>`select (select count(*)::int from process_instances where tenant_id = ${a})
    + (select count(*)::int from process_templates where tenant_id = ${a}) + (select count(*)::int from activities where tenant_id = ${a}) as n`.execute(ctx.db)
  t.equal(rows[0]?.n, 0, 'it went with the tenant')
  t.same((await sql`select id from tenants where id = ${a}`.execute(ctx.db)).rows, [])
})

t.test('two deletions of a large tenant at once: one deletes it (204), the other finds it gone (404), neither deadlocks (409)', async (t) => {
  // Both deleted the same parts, and the same rows in different orders: "deadlock detected", answered
  // 409 "retry it", about one time in two.
  const ctx = await setupApp(t)
  for (let round = 0; round < 4; round++) {
    const world = await buildWorld(ctx)
    const a = world.a.id
    await sql`insert into activities (tenant_id, id, kind, message) select ${a}, gen_random_uuid(), 'note', 'history' from generate_series(1, 10000)`.execute(ctx.db)
    await sql`insert into properties (tenant_id, id, maintainer_user_id, fields) select ${a}, gen_random_uuid(), ${world.user.id}, '{"price": 1}' from generate_series(1, 10000)`.execute(ctx.db)
    const both = await Promise.all([ctx.operator.delete(`/v1/tenants/${a}`), ctx.operator.delete(`/v1/tenants/${a}`)])
    t.same(both.map((r) => r.statusCode).sort(), [204, 404], both.map((r) => r.body).join(' '))
    t.same((await sql`select id from tenants where id = ${a}`.execute(ctx.db)).rows, [])
  }
})

t.test('a part of a large tenant\'s deletion that deadlocks with another transaction is tried again: 204, not 409', async (t) => {
  const ctx = await setupApp(t)
  const world = await buildWorld(ctx)
  const a = world.a.id
  await sql`insert into activities (tenant_id, id, kind, message) select ${a}, gen_random_uuid(), 'note', 'history' from generate_series(1, ${PART_ROWS + 1})`.execute(ctx.db)
  // Another transaction holds the tenant's activities while the part waits for them.
  const deleted = await deadlockedDeletion(t, ctx, a, async (trx) => {
    await sql`select id from activities where tenant_id = ${a} for update`.execute(trx)
  }, 'the part waits for the held activities')
  t.equal(deleted.statusCode, 204, deleted.body)
  t.same((await sql`select id from tenants where id = ${a}`.execute(ctx.db)).rows, [])
})

t.test('the last transaction of a deletion that deadlocks with another transaction is tried again: 204, not 409', async (t) => {
  const ctx = await setupApp(t)
  const world = await buildWorld(ctx)
  const a = world.a.id
  // As for a part: another transaction holds the tenant's processes while the last transaction waits for them.
  const deleted = await deadlockedDeletion(t, ctx, a, async (trx) => {
    const { rows } = await sql`select id from process_instances where tenant_id = ${a} for update`.execute(trx)
    t.ok(rows.length > 0, 'the tenant has processes')
  }, 'the last transaction waits for the held processes')
  t.equal(deleted.statusCode, 204, deleted.body)
  t.same((await sql`select id from tenants where id = ${a}`.execute(ctx.db)).rows, [])
})
