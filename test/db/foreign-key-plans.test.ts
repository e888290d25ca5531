import pg from 'pg'
import t, { type Test } from 'tap'
import { byKeys, byKeysText } from '../../src/db/by-keys.js'
import type { DB } from '../../src/db/connect.js'
import { Statement } from '../../src/db/statement.js'
import { CUSTOM_PLAN } from '../../src/db/postgres.js'
import { Kysely, PostgresDialect, sql } from '../../src/db/kysely.js'
import { findRecords, findUsers, stepsAt } from '../../src/modules/instances/runtime-repository.js'
import { recordSizesPage, recordSlices } from '../../src/modules/records/repository.js'
import { cancelTriggeredStatement, cancelUnwantedStatement, cancelWithdrawnStatement } from '../../src/modules/records/trigger-repository.js'
import { claimStatement, type ClaimOptions } from '../../src/scheduler/claim-deliveries.js'
import { oldProcessesLocked, oldRowsOf, oldRowsRemoval } from '../../src/scheduler/remove-old-history.js'
import { instancesLockedInOrder, stepsAndNext } from '../../src/scheduler/delivery-repository.js'
import { nextDue } from '../../src/scheduler/next-due.js'
import { instancesPage, STEP_READS } from '../../src/modules/instances/repository.js'
import { instancesNamingUser } from '../../src/modules/users/repository.js'
import { searchesWithCandidatesStatement, type DateSearch } from '../../src/modules/autostart/repository.js'
import { queueFiguresStatement } from '../../src/modules/health/repository.js'
import { deliveriesByOutcome, deliveriesPage, listDeliveries } from '../../src/modules/deliveries/repository.js'
import { claimMails, markSent, releaseMails, type ClaimedMail } from '../../src/scheduler/mail-repository.js'
import { settleStepMails } from '../../src/scheduler/email-steps.js'
import { endFollowUps } from '../../src/scheduler/automatic-steps/end-follow-ups.js'
import { findDueAutomaticStepIds, findDueWaitingStepIds, findOverdueStepIds, lockDueAutomaticSteps, lockWaitingSteps, markOverdueSteps, pairWithInstances } from '../../src/scheduler/step-chores-repository.js'
import type { Database } from '../../src/db/database.js'
import { createTestDatabase, databaseUrl } from '../helpers/database.js'

// Postgres checks a foreign key with its own query on the referenced table, planned once per
// connection and kept. On an empty table without statistics every index whose leading columns the
// check's condition covers costs the same, and the newest one wins: a check through an index of
// (tenant_id, …) other than the key walks all of the tenant's rows, on every insert, for as long as
// the connection lives (migration 0014). Each check must take the index of the key it references.

interface ForeignKey {
  name: string
  table: string
  keyIndex: string
  columns: { name: string; type: string }[]
}

/** A database fresh from the migrated template, and a connection of its own to plan on. */
async function emptyDatabase(t: Test) {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const client = new pg.Client({ connectionString: databaseUrl(database.name) })
  await client.connect()
  t.teardown(() => client.end())
  return { database, client }
}

let readOnly: ReturnType<typeof createTestDatabase> | undefined

/**
 * The same, for a test that only reads the catalogue and plans statements without running them: one
 * database fresh from the template serves all such tests, each on a connection of its own (its own
 * settings, prepared statements and plans), which may write nothing, so the database stays empty and
 * without statistics for the next. A clone of the template costs Postgres about 0.2-0.4 s of CPU.
 */
async function emptyDatabaseToRead(test: Test) {
  if (!readOnly) {
    readOnly = createTestDatabase()
    const shared = readOnly
    t.teardown(async () => (await shared).drop())
  }
  const database = await readOnly
  const client = new pg.Client({ connectionString: databaseUrl(database.name), options: '-c default_transaction_read_only=on' })
  await client.connect()
  test.teardown(() => client.end())
  return { database, client }
}

/** A value written into a statement's text: an array as Postgres's array literal, a time as ISO 8601. */
function literalOf(client: pg.Client, value: unknown): string {
  if (value === null) return 'null'
  return client.escapeLiteral(Array.isArray(value) ? `{${value.join(',')}}` : value instanceof Date ? value.toISOString() : String(value))
}

/** A statement's text with its values written in, as Postgres plans it when it plans with the values. */
function inlined(client: pg.Client, { sql: text, parameters }: { sql: string; parameters: readonly unknown[] }): string {
  return parameters.reduce<string>((text, value, i) => text.replace(new RegExp(`\\$${i + 1}\\b`), literalOf(client, value)), text)
}

/** The plan of a statement (its text, or `execute name (…)`), as JSON text. */
async function planOf(client: pg.Client, text: string): Promise<string> {
  return JSON.stringify((await client.query<{ 'QUERY PLAN': unknown }>(`explain (format json) ${text}`)).rows[0]!['QUERY PLAN'])
}

t.test('every foreign key check on an empty database goes through the referenced key\'s own index', async (t) => {
  const { client } = await emptyDatabaseToRead(t)

  const { rows: keys } = await client.query<ForeignKey>(`
    select c.conname as name, c.confrelid::regclass::text as "table", i.relname as "keyIndex",
      (select json_agg(json_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod)) order by k.ord)
         from unnest(c.confkey) with ordinality k(attnum, ord)
         join pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.attnum) as columns
    from pg_constraint c join pg_class i on i.oid = c.conindid
    where c.contype = 'f' order by c.conname`)
  t.ok(keys.length > 20, `the schema's foreign keys (${keys.length})`)

  await client.query('set plan_cache_mode = force_generic_plan')
  for (const [n, key] of keys.entries()) {
    // The shape of Postgres's own check (ri_triggers.c): the referenced key's columns, locked FOR KEY SHARE.
    const where = key.columns.map((c, i) => `${c.name} = $${i + 1}`).join(' and ')
    await client.query(`prepare check_${n} (${key.columns.map((c) => c.type).join(', ')}) as
      select 1 from only ${key.table} x where ${where} for key share of x`)
    const { rows } = await client.query<{ 'QUERY PLAN': unknown }>(
      `explain (format json) execute check_${n} (${key.columns.map(() => 'null').join(', ')})`)
    const indexes = JSON.stringify(rows[0]!['QUERY PLAN']).match(/"Index Name":"[^"]+"/g) ?? []
    t.same(indexes, [`"Index Name":"${key.keyIndex}"`], `${key.name}: ${key.table} checked through ${key.keyIndex}`)
  }
})

// SPEC 5, Growing past one database: every tenant-owned table carries tenant_id, its key and the
// foreign keys between tenant-owned tables include it (so a row cannot point into another tenant, and
// the schema can be distributed by tenant); the catalogue and Baton's own bookkeeping are global.
const GLOBAL_TABLES = ['kysely_migration', 'kysely_migration_lock', 'marketplace_services', 'operator_keys', 'service_parameters',
  'service_triggers', 'signing_keys', 'tenants']

t.test('every tenant-owned table is keyed by tenant_id first, and every foreign key between two of them matches tenant_id to tenant_id', async (t) => {
  const { client } = await emptyDatabaseToRead(t)
  const columnsOf = (relation: string, keys: string) => `(select array_agg(a.attname::text order by k.ord) from unnest(${keys}) with ordinality k(attnum, ord)
    join pg_attribute a on a.attrelid = ${relation} and a.attnum = k.attnum)`
  const { rows: tables } = await client.query<{ table: string; tenantOwned: boolean; key: string[] | null }>(`
    select c.relname as "table",
      exists (select 1 from pg_attribute where attrelid = c.oid and attname = 'tenant_id' and not attisdropped) as "tenantOwned",
      ${columnsOf('c.oid', 'p.conkey')} as key
    from pg_class c join pg_namespace n on n.oid = c.relnamespace and n.nspname = current_schema()
      left join pg_constraint p on p.conrelid = c.oid and p.contype = 'p'
    where c.relkind in ('r', 'p') order by 1`)
  t.ok(tables.length > 20, `the schema's tables (${tables.length})`)
  for (const { table, tenantOwned, key } of tables) {
    if (GLOBAL_TABLES.includes(table)) t.notOk(tenantOwned, `${table} is global`)
    else t.same([tenantOwned, key?.[0]], [true, 'tenant_id'], `${table} carries tenant_id and its key starts with it (${key?.join(', ')})`)
  }
  const owned = new Set(tables.filter((table) => table.tenantOwned).map((table) => table.table))
  const { rows: keys } = await client.query<{ name: string; from: string; to: string; columns: string[]; referenced: string[] }>(`
    select c.conname as name, c.conrelid::regclass::text as "from", c.confrelid::regclass::text as "to",
      ${columnsOf('c.conrelid', 'c.conkey')} as columns, ${columnsOf('c.confrelid', 'c.confkey')} as referenced
    from pg_constraint c where c.contype = 'f' order by c.conname`)
  const between = keys.filter((key) => owned.has(key.from) && owned.has(key.to))
  t.ok(between.length >= 15, `foreign keys between tenant-owned tables (${between.length})`)
  for (const key of between) {
    const at = key.columns.indexOf('tenant_id')
    t.ok(at >= 0 && key.referenced[at] === 'tenant_id', `${key.name}: (${key.columns.join(', ')}) → ${key.to} (${key.referenced.join(', ')})`)
  }
})

t.test('a user\'s deletion checks each row that may name the user through an index by user, on an empty database', async (t) => {
  const { database, client } = await emptyDatabaseToRead(t)
  // The referencing side of each foreign key to users: the check Postgres runs when a user is deleted (ri_triggers.c).
  const { rows: keys } = await client.query<{ name: string; table: string; columns: string[] }>(`
    select c.conname as name, c.conrelid::regclass::text as "table",
      (select array_agg(a.attname::text order by k.ord) from unnest(c.conkey) with ordinality k(attnum, ord)
         join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum) as columns
    from pg_constraint c where c.contype = 'f' and c.confrelid = 'users'::regclass order by c.conname`)
  t.ok(keys.length >= 7, `the foreign keys to users (${keys.length})`)
  await client.query('set plan_cache_mode = force_generic_plan')
  for (const [n, key] of keys.entries()) {
    const where = key.columns.map((column, i) => `$${i + 1} = ${column}`).join(' and ')
    await client.query(`prepare user_check_${n} (${key.columns.map(() => 'uuid').join(', ')}) as
      select 1 from only ${key.table} x where ${where} for key share of x`)
    const plan = await planOf(client, `execute user_check_${n} (${key.columns.map(() => 'null').join(', ')})`)
    t.notMatch(plan, /Seq Scan|_pkey/, `${key.name}: ${key.table} checked through an index by user (${plan.match(/"Index Name":"[^"]+"/g)?.join(', ')})`)
  }
  await client.query('reset plan_cache_mode')
  const tenant = '00000000-0000-7000-8000-000000000001'
  const user = '00000000-0000-7000-8000-000000000002'
  const plan = await planOf(client, inlined(client, instancesNamingUser(tenant, user).compile(database.db)))
  t.notMatch(plan, /Seq Scan|Bitmap/, 'the processes that name the user: each kind through its index by user')
  t.same(plan.match(/"Index Name":"[^"]+"/g)?.sort(), ['instance_steps_responsible_idx', 'process_instances_controller_idx', 'process_instances_responsible_idx']
    .map((name) => `"Index Name":"${name}"`), 'the indexes by user')
})

t.test('a lookup of a tenant\'s row by its key takes the primary key, on every table keyed by (tenant_id, id), on an empty database', async (t) => {
  const { client } = await emptyDatabaseToRead(t)
  const { rows: tables } = await client.query<{ table: string; key: string }>(`
    select c.conrelid::regclass::text as "table", i.relname as key
    from pg_constraint c join pg_class i on i.oid = c.conindid
    where c.contype = 'p' and c.conkey = array[
      (select attnum from pg_attribute where attrelid = c.conrelid and attname = 'tenant_id'),
      (select attnum from pg_attribute where attrelid = c.conrelid and attname = 'id')]::int2[]
    order by 1`)
  t.ok(tables.length > 10, `tables keyed by (tenant_id, id): ${tables.length}`)
  await client.query('set plan_cache_mode = force_generic_plan')
  for (const [n, { table, key }] of tables.entries()) {
    await client.query(`prepare lookup_${n} (uuid, uuid) as select * from ${table} where tenant_id = $1 and id = $2`)
    const plan = JSON.stringify((await client.query<{ 'QUERY PLAN': unknown }>(`explain (format json) execute lookup_${n} (null, null)`)).rows[0]!['QUERY PLAN'])
    t.same(plan.match(/"Index Name":"[^"]+"/g), [`"Index Name":"${key}"`], `${table}: through ${key}`)
  }
})

type Keys = { tenant_id: string; id: string }[]
/** The condition of `byKeys` through Kysely's `sql` tag, and of `byKeysText` in a Statement's text. */
const conditions: Record<string, (db: DB, keys: Keys) => { sql: string; parameters: readonly unknown[] }> = {
  byKeys: (db, keys) => sql`update instance_steps s set version = s.version + 1 where ${byKeys('s', keys)}`.compile(db),
  byKeysText: (_db, keys) => {
    const statement = new Statement()
    return { sql: `update instance_steps s set version = s.version + 1 where ${byKeysText(statement, 's', keys)}`, parameters: statement.values }
  }
}

for (const [name, condition] of Object.entries(conditions)) {
  t.test(`a batch statement (${name}) finds its rows by primary key with both columns, however many rows the tenant has and without statistics`, async (t) => {
    const { database, client } = await emptyDatabase(t)
    const tenant = '00000000-0000-7000-8000-000000000001'
    const rows = [1, 2, 3].map((n) => ({ tenant_id: tenant, id: `00000000-0000-7000-8000-00000000010${n}` }))
    const statement = (keys: Keys) => condition(database.db, keys)
    const bothColumns = /"Index Name":"instance_steps_pkey".*"Index Cond":"\(\(tenant_id = [^)]+\) AND \(id = /

    // One row: a plain key, which the plan a prepared statement keeps (made on the empty table) looks up by both columns.
    const one = statement(rows.slice(0, 1))
    t.notMatch(one.sql, CUSTOM_PLAN, 'one row: prepared as usual')
    await client.query(`prepare one_row as ${one.sql}`)
    await client.query('set plan_cache_mode = force_generic_plan')
    t.match(await planOf(client, `execute one_row (${one.parameters.map((value) => literalOf(client, value)).join(', ')})`), bothColumns,
      'one row: the kept plan takes the key')
    await client.query('reset plan_cache_mode')

    // More rows: `= any` arrays, planned with their values each time, once the tenant has rows to walk.
    const many = statement(rows)
    t.match(many.sql, CUSTOM_PLAN, 'more rows: never kept as a generic plan')
    await client.query('set session_replication_role = replica') // no triggers: rows without their processes
    await client.query(`insert into instance_steps (tenant_id, id, instance_id, position, kind, name, start_mode, responsibility, refers_to_property, refers_to_address)
      select $1, gen_random_uuid(), gen_random_uuid(), 1, 'task', 'step', 'afterPrevious', 'processResponsible', false, false from generate_series(1, 3000)`, [tenant])
    t.match(await planOf(client, inlined(client, many)), bothColumns, 'more rows, 3,000 in the tenant, no statistics: the key with both columns')
  })
}

t.test('a process read finds each step\'s latest delivery through the step index, on an empty database', async (t) => {
  const { database, client } = await emptyDatabaseToRead(t)
  const tenant = '00000000-0000-7000-8000-000000000001'
  const { sql: text, parameters } = database.db.selectFrom('deliveries').select('id')
    .where('tenant_id', '=', tenant).where('step_id', '=', '00000000-0000-7000-8000-000000000101')
    .orderBy('id', 'desc').limit(1).compile()
  await client.query('set plan_cache_mode = force_generic_plan')
  await client.query(`prepare latest as ${text}`)
  const plan = await planOf(client, `execute latest (${parameters.map((value) => literalOf(client, value)).join(', ')})`)
  t.match(plan, /"Index Name":"deliveries_step_idx"/, 'the step index')
  t.notMatch(plan, /"Filter"/, 'no other deliveries of the tenant are read and filtered')
})

for (const table of ['properties', 'addresses'] as const) {
  t.test(`deleting one of the ${table} cancels its pending trigger deliveries through their own index, on an empty database`, async (t) => {
    const { database, client } = await emptyDatabaseToRead(t)
    const { sql: text, parameters } = cancelTriggeredStatement(database.db, table, '00000000-0000-7000-8000-000000000001',
      '00000000-0000-7000-8000-000000000101', new Date()).compile()
    await client.query('set plan_cache_mode = force_generic_plan')
    await client.query(`prepare cancel as ${text}`)
    const plan = await planOf(client, `execute cancel (${parameters.map((value) => literalOf(client, value)).join(', ')})`)
    t.match(plan, `"Index Name":"deliveries_pending_${table === 'properties' ? 'property' : 'address'}_idx"`, 'the index of pending deliveries by record')
  })
}

t.test('deleting or changing a trigger cancels its service\'s pending trigger deliveries through their own index, on an empty database', async (t) => {
  const { database, client } = await emptyDatabaseToRead(t)
  const { sql: text, parameters } = cancelUnwantedStatement(database.db, '00000000-0000-7000-8000-000000000001', new Date()).compile()
  await client.query('set plan_cache_mode = force_generic_plan')
  await client.query(`prepare cancel_unwanted as ${text}`)
  const plan = await planOf(client, `execute cancel_unwanted (${parameters.map((value) => literalOf(client, value)).join(', ')})`)
  t.match(plan, '"Index Name":"deliveries_pending_service_tenant_idx"', 'the index of pending trigger deliveries by service, not the service\'s whole history')
})

t.test('deactivating a service for a tenant cancels its pending trigger deliveries through their own index, on an empty database', async (t) => {
  const { database, client } = await emptyDatabaseToRead(t)
  const { sql: text, parameters } = cancelWithdrawnStatement(database.db, '00000000-0000-7000-8000-000000000001',
    '00000000-0000-7000-8000-000000000002', new Date()).compile()
  await client.query('set plan_cache_mode = force_generic_plan')
  await client.query(`prepare cancel_withdrawn as ${text}`)
  const plan = await planOf(client, `execute cancel_withdrawn (${parameters.map((value) => literalOf(client, value)).join(', ')})`)
  t.match(plan, '"Index Name":"deliveries_pending_service_tenant_idx"', 'the index of pending trigger deliveries by service, not the service\'s whole history')
  t.match(plan, /"Index Cond":"[^"]*tenant_id/, 'by service and tenant, not every tenant\'s backlog of the service')
})

for (const [name, text] of Object.entries(STEP_READS)) {
  t.test(`${name}: only a webhook step's deliveries are looked up`, async (t) => {
    const { client } = await emptyDatabase(t)
    const tenant = '00000000-0000-7000-8000-000000000001'
    const instance = '00000000-0000-7000-8000-000000000002'
    await client.query('set session_replication_role = replica') // no triggers: steps without their process
    await client.query(`insert into process_instances (tenant_id, id, template_id, template_name, responsible_user_id, controller_user_id)
      values ($1, $2, gen_random_uuid(), 'p', gen_random_uuid(), gen_random_uuid())`, [tenant, instance])
    await client.query(`insert into instance_steps (tenant_id, id, instance_id, position, kind, name, start_mode, responsibility, refers_to_property, refers_to_address)
      select $1, gen_random_uuid(), $2, p, 'task', 'step', 'afterPrevious', 'processResponsible', false, false from generate_series(1, 20) p`, [tenant, instance])
    await client.query(`prepare read_steps as ${text}`)
    await client.query('set plan_cache_mode = force_generic_plan')
    const { rows } = await client.query<{ 'QUERY PLAN': unknown }>(`explain (analyze, format json) execute read_steps ('${tenant}', '${instance}')`)
    const plan = JSON.stringify(rows[0]!['QUERY PLAN'])
    t.match(plan, /"Relation Name":"instance_steps"[^}]*"Actual Rows":20/, 'the twenty steps are read')
    t.match(plan, /"One-Time Filter":"\(s\.kind = 'webhook'::text\)"/, 'the kind is checked before the deliveries')
    t.match(plan, /"Index Name":"deliveries_step_idx","Relation Name":"deliveries"[^}]*"Actual Loops":0/, 'twenty task steps: the deliveries\' index never probed')
  })
}

/** The steps of `count` processes of two task steps each, inserted without their processes (no triggers). */
async function twoStepProcesses(client: pg.Client, tenant: string, count: number) {
  await client.query('set session_replication_role = replica')
  const { rows } = await client.query<{ tenant_id: string; id: string; instance_id: string; position: number }>(`
    insert into instance_steps (tenant_id, id, instance_id, position, kind, name, start_mode, responsibility, refers_to_property, refers_to_address)
    select $1, gen_random_uuid(), i.id, p, 'task', 'step', 'afterPrevious', 'processResponsible', false, false
    from (select gen_random_uuid() as id from generate_series(1, $2::int)) i cross join generate_series(1, 2) p
    returning tenant_id, id, instance_id, position`, [tenant, count])
  return rows
}

t.test('an outcome batch reads its steps and the step after each by the position key, whatever the planner believes', async (t) => {
  const { database, client } = await emptyDatabase(t)
  const tenant = '00000000-0000-7000-8000-000000000001'
  const steps = await twoStepProcesses(client, tenant, 10_000)
  // 60 first steps (each with a next) and 40 last ones: a batch of a hundred.
  const refs = [...steps.filter((s) => s.position === 1).slice(0, 60), ...steps.filter((s) => s.position === 2).slice(0, 40)]
    .map(({ tenant_id, id }) => ({ tenant_id, id }))
  const text = inlined(client, sql`select * from (${stepsAndNext(refs)}) x`.compile(database.db))
  const lookups = /"Index Name":"instance_steps_pkey","Relation Name":"instance_steps","Alias":"x"[^}]*"Index Cond":"\(\(tenant_id = k\.tenant_id\) AND \(id = k\.id\)\)"/
  // Without statistics, an array of ids led the planner to walk the tenant's steps by tenant alone.
  t.match(await planOf(client, text), lookups, 'each step through the primary key with both columns')
  t.notMatch(await planOf(client, text), /Bitmap|Hash Join|Merge Join|Seq Scan/, 'no walk of the tenant\'s steps')
  // A planner that believes a walk of the tenant's steps is cheaper (in the burst after a large
  // history, not analyzed, it hashed all of them for each batch) must find no such plan.
  await client.query('set enable_nestloop = off')
  const plan = await planOf(client, text)
  t.match(plan, /"Index Name":"instance_steps_instance_position_key"/, 'the next steps through the position key')
  t.match(plan, lookups, 'and the steps themselves through the primary key')
  t.notMatch(plan, /Bitmap|Hash Join|Merge Join|Seq Scan/, 'no walk of the tenant\'s steps, whatever the planner believes')
  await client.query('reset enable_nestloop')
  t.equal((await stepsAndNext(refs).execute(database.db)).rows.length, 60 * 2 + 40, 'each step, and its next where there is one')
  t.equal((await stepsAndNext([...refs, ...refs.slice(0, 5)]).execute(database.db)).rows.length, 60 * 2 + 40, 'a step named twice, read once')
  t.equal((await stepsAndNext([]).execute(database.db)).rows.length, 0, 'no steps: none read')
})

t.test('a statement of eachKey runs on the plan its prepared statement keeps, batch after batch of one key, and that plan looks each key up', async (t) => {
  const { database, client } = await emptyDatabase(t)
  const tenant = '00000000-0000-7000-8000-000000000001'
  const steps = (await twoStepProcesses(client, tenant, 1000)).map(({ tenant_id, id }) => ({ tenant_id, id }))
  const statements = {
    lock: (refs: typeof steps) => instancesLockedInOrder(refs).compile(database.db),
    steps: (refs: typeof steps) => sql`select * from (${stepsAndNext(refs)}) x`.compile(database.db)
  }
  const lookups = /"Index Cond":"\(\(tenant_id = k\.tenant_id\) AND \(id = k\.id\)\)"/
  const values = ({ parameters }: { parameters: readonly unknown[] }) => parameters.map((value) => literalOf(client, value)).join(', ')
  for (const [name, compile] of Object.entries(statements)) {
    await client.query(`prepare ${name} as ${compile(steps.slice(0, 1)).sql}`)
    // A steady load: an outcome batch of one delivery after another.
    for (const step of steps.slice(0, 12)) await client.query(`execute ${name}(${values(compile([step]))})`)
    const { rows } = await client.query<{ generic_plans: string; custom_plans: string }>(
      'select generic_plans, custom_plans from pg_prepared_statements where name = $1', [name])
    // Planned with its values while Postgres compares (five runs), then on the kept plan.
    t.same(rows[0], { generic_plans: '7', custom_plans: '5' }, `${name}: planned five times in twelve runs, not on every run`)
    await client.query('set plan_cache_mode = force_generic_plan')
    const plan = await planOf(client, `execute ${name}(${values(compile(steps.slice(0, 50)))})`)
    await client.query('reset plan_cache_mode')
    t.match(plan, lookups, `${name}: the kept plan looks each key up by the primary key with both columns`)
    t.notMatch(plan, /Bitmap|Hash Join|Merge Join|Seq Scan/, `${name}: and walks no tenant's rows`)
  }
})

t.test('an outcome batch locks its processes one primary key lookup each, in id order, however many and without statistics', async (t) => {
  const { database, client } = await emptyDatabase(t)
  const tenant = '00000000-0000-7000-8000-000000000001'
  await client.query('set session_replication_role = replica') // no triggers: processes without their templates
  const { rows: processes } = await client.query<{ tenant_id: string; id: string }>(`
    insert into process_instances (tenant_id, id, template_id, template_name, responsible_user_id, controller_user_id)
    select $1, gen_random_uuid(), gen_random_uuid(), 'process', gen_random_uuid(), gen_random_uuid() from generate_series(1, 3000)
    returning tenant_id, id`, [tenant])
  const lookups = /"Index Name":"process_instances_pkey","Relation Name":"process_instances","Alias":"x"[^}]*"Index Cond":"\(\(tenant_id = k\.tenant_id\) AND \(id = k\.id\)\)"/
  for (const count of [1, 8, 64]) {
    const plan = await planOf(client, inlined(client, instancesLockedInOrder(processes.slice(0, count)).compile(database.db)))
    t.match(plan, lookups, `${count}: each process through the primary key with both columns`)
    t.notMatch(plan, /Bitmap|Hash Join|Merge Join|Seq Scan/, `${count}: no walk of the tenant's processes`)
    // The keys, in the order they go in, drive a nested loop whose inner side locks each row as it finds it.
    t.match(plan, /"Node Type":"Nested Loop".*"Node Type":"Function Scan","Parent Relationship":"Outer".*"Node Type":"LockRows"/,
      `${count}: each row locked in the keys' order`)
  }

  // The keys go in sorted by id, so rows are locked in id order; another tenant's process in the batch too.
  // A version-7 id, which none of the inserted ones (version 4) can be; the smallest of the batch.
  const other = { tenant_id: '00000000-0000-7000-8000-000000000002', id: '00000000-0000-7000-8000-0000000000ff' }
  await client.query(`insert into process_instances (tenant_id, id, template_id, template_name, responsible_user_id, controller_user_id)
    values ($1, $2, gen_random_uuid(), 'process', gen_random_uuid(), gen_random_uuid())`, [other.tenant_id, other.id])
  const batch = [...processes.slice(0, 40).reverse(), other, processes[3]!]
  const ids = [...new Set(batch.map((p) => p.id))].sort()
  const compiled = instancesLockedInOrder(batch).compile(database.db)
  const keys = JSON.parse(compiled.parameters[0] as string) as { tenant_id: string; id: string }[]
  t.same(keys.map((k) => k.id), ids, 'the ids go in sorted, each once')
  t.same(keys.map((k) => k.tenant_id), ids.map((id) => (id === other.id ? other.tenant_id : tenant)), 'each with its tenant')
  await client.query('begin')
  const { rows } = await client.query<{ id: string }>(inlined(client, compiled))
  t.same(rows.map((r) => r.id), ids, 'each process once, in id order')
  const second = new pg.Client({ connectionString: databaseUrl(database.name) })
  await second.connect()
  t.teardown(() => second.end())
  for (const p of [processes[0]!, other, processes[39]!]) {
    await t.rejects(second.query('select 1 from process_instances where tenant_id = $1 and id = $2 for update nowait', [p.tenant_id, p.id]),
      { code: '55P03' }, `${p.id} is locked`)
  }
  t.same((await second.query('select 1 from process_instances where tenant_id = $1 and id = $2 for update nowait', [tenant, processes[40]!.id])).rows.length, 1,
    'a process not in the batch is not')
  await client.query('rollback')
})

interface PlanNode {
  'Node Type': string
  'Relation Name'?: string
  'Index Name'?: string
  'Actual Loops'?: number
  'Actual Rows'?: number
  'Rows Removed by Filter'?: number
  'Rows Removed by Index Recheck'?: number
  Plans?: PlanNode[]
}

/** Every scan of a table in a plan, as its node type, its index (if any) and how often it ran. */
function scansOf(plan: PlanNode, table: string): { scan: string; loops: number }[] {
  const own = plan['Relation Name'] === table && plan['Node Type'] !== 'ModifyTable'
    ? [{ scan: `${plan['Node Type']} ${plan['Index Name'] ?? ''}`.trim(), loops: plan['Actual Loops'] ?? 1 }] : []
  return [...own, ...(plan.Plans ?? []).flatMap((child) => scansOf(child, table))]
}

/** Every index a plan reads, in the plan's order. */
function indexesOf(plan: PlanNode): string[] {
  return [...(plan['Index Name'] ? [plan['Index Name']] : []), ...(plan.Plans ?? []).flatMap(indexesOf)]
}

/** The update of the steps in a claim's plan. */
function stepsUpdate(plan: PlanNode): PlanNode | undefined {
  if (plan['Node Type'] === 'ModifyTable' && plan['Relation Name'] === 'instance_steps') return plan
  for (const child of plan.Plans ?? []) {
    const found = stepsUpdate(child)
    if (found) return found
  }
  return undefined
}

/**
 * A read of tenants that costs nothing per row: the tenants being deleted read once for the whole
 * statement (the check that a row's tenant is not being deleted, through tenants_deleting_idx or, on a
 * table the planner believes small, in one pass), or a tenant looked up by its key (a claim's names).
 */
const byTenantKey = ({ scan, loops }: { scan: string; loops: number }) => loops <= 1 || scan === 'Index Scan tenants_pkey'

/** A scan that is cheap whatever the table holds: a lookup by the primary key, or one pass over a table the planner believes small. */
const byKeyOrOnce = ({ scan, loops }: { scan: string; loops: number }) =>
  /instance_steps_pkey$/.test(scan) || (scan === 'Seq Scan' && loops <= 1)

for (const history of [{ deliveries: 0, steps: 0, limit: 40 }, { deliveries: 100_000, steps: 0, limit: 40 }, { deliveries: 100_000, steps: 30_000, limit: 1000 }]) {
  const shape = `${history.deliveries} finished deliveries, ${history.steps} finished steps, a claim of up to ${history.limit}`
  t.test(`a claim finds its steps by the primary key, however many steps the tenant has open and without statistics (${shape})`, async (t) => {
    const { database, client } = await emptyDatabase(t)
    const tenant = '00000000-0000-7000-8000-000000000001'
    const service = '00000000-0000-7000-8000-0000000000aa'
    const now = new Date()
    await client.query('set session_replication_role = replica') // no triggers: steps and deliveries without their processes
    await client.query(`insert into tenants (id, name, web_id) values ($1, 'Plans', 'plans')`, [tenant])
    await client.query(`insert into marketplace_services (id, name, provider, webhook_url, secret) values ($1, 'ValueCo', 'ValueCo', 'http://127.0.0.1:9/hook', 'whsec_x')`, [service])
    // Finished calls of record changes and finished steps, which the planner has not analyzed: with
    // them, the kept plan walked the partial index of open steps once for each claimed step, or
    // hashed every step to read the claimed ones.
    await client.query(`insert into deliveries (tenant_id, id, service_id, source, parameters, next_attempt_at, status, finished_at)
      select $1, gen_random_uuid(), $3, 'trigger', '{}', $2, 'succeeded', $2 from generate_series(1, $4::int)`, [tenant, now, service, history.deliveries])
    await client.query(`insert into instance_steps (tenant_id, id, instance_id, position, kind, name, start_mode, responsibility, refers_to_property,
        refers_to_address, state)
      select $1, gen_random_uuid(), gen_random_uuid(), 1, 'task', 'step', 'afterPrevious', 'processResponsible', false, false, 'done'
      from generate_series(1, $2::int)`, [tenant, history.steps])
    // 3,000 open steps of three people; forty of them have a call due.
    await client.query(`
      with steps as (
        insert into instance_steps (tenant_id, id, instance_id, position, kind, name, start_mode, responsibility, refers_to_property,
          refers_to_address, state, assignee_user_id)
        select $1, gen_random_uuid(), gen_random_uuid(), 1, 'task', 'step', 'afterPrevious', 'processResponsible', false, false, 'due',
          ('00000000-0000-7000-8000-00000000010' || (n % 3))::uuid
        from generate_series(1, 3000) n
        returning tenant_id, id, instance_id
      )
      insert into deliveries (tenant_id, id, service_id, source, instance_id, step_id, parameters, next_attempt_at)
      select tenant_id, gen_random_uuid(), $3, 'step', instance_id, id, '{}', $2 from (select * from steps order by random() limit 40) s`,
    [tenant, now, service])
    const claim = claimStatement({ workerId: 'plans', now, leaseMs: 60_000, limit: history.limit }).compile(database.db)
    const execute = `execute claim (${claim.parameters.map((value) => literalOf(client, value)).join(', ')})`
    const withValues = JSON.parse(await planOf(client, inlined(client, claim)))[0].Plan as PlanNode
    t.ok(scansOf(stepsUpdate(withValues)!, 'instance_steps').every(byKeyOrOnce), 'planned with its values: the steps turn running by key, or in one pass')
    // As the worker runs it: prepared, with the plan Postgres keeps for it.
    await client.query(`prepare claim as ${claim.sql}`)
    await client.query('set plan_cache_mode = force_generic_plan')
    await client.query('begin')
    const { rows } = await client.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>(`explain (analyze, format json) ${execute}`)
    const kept = rows[0]!['QUERY PLAN'][0].Plan
    const update = scansOf(stepsUpdate(kept)!, 'instance_steps')
    t.ok(update.length > 0 && update.every(byKeyOrOnce), `the kept plan turns the steps running by key, or in one pass: not a walk of the open steps each (${JSON.stringify(update)})`)
    const all = scansOf(kept, 'instance_steps')
    t.ok(all.slice(update.length).every(byKeyOrOnce), `the kept plan reads the claimed steps by key, or in one pass (${JSON.stringify(all)})`)
    const tenants = scansOf(kept, 'tenants')
    t.ok(tenants.length > 0 && tenants.every(byTenantKey), `the kept plan checks each due delivery's tenant by key (${JSON.stringify(tenants)})`)
    const { rows: running } = await client.query<{ n: number }>(`select count(*)::int as n from instance_steps where state = 'running'`)
    t.equal(running[0]!.n, 40, 'forty steps turned running')
    await client.query('rollback')
    // The claim of a full host's services and free targets apart, and the main claim that leaves them out: the
    // pending deliveries by their due time, never a service's whole history.
    const host = '127.0.0.1:9'
    const variants: [string, Partial<ClaimOptions>][] = [
      ['a claim for some services', { only: { services: [service], hosts: [] } }],
      ['a claim for some hosts\' free targets', { only: { services: [], hosts: [host] } }],
      ['a claim for some services and hosts\' free targets', { only: { services: [service], hosts: [host] } }],
      ['a claim that leaves some services and hosts\' free targets out', { skipServices: [service], skipHosts: [host] }]
    ]
    for (const [n, [what, options]] of variants.entries()) {
      const only = claimStatement({ workerId: 'plans', now, leaseMs: 60_000, limit: history.limit, ...options }).compile(database.db)
      await client.query(`prepare claim_only_${n} as ${only.sql}`)
      await client.query('begin')
      const { rows: onlyPlan } = await client.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>(
        `explain (analyze, format json) execute claim_only_${n} (${only.parameters.map((value) => literalOf(client, value)).join(', ')})`)
      await client.query('rollback')
      const indexes = indexesOf(onlyPlan[0]!['QUERY PLAN'][0].Plan)
      t.same(indexes.filter((name) => name.startsWith('deliveries_') && name !== 'deliveries_pkey'), ['deliveries_due_idx'],
        `the kept plan of ${what} reads the due deliveries, not a service's history (${JSON.stringify(indexes)})`)
      t.ok(scansOf(onlyPlan[0]!['QUERY PLAN'][0].Plan, 'instance_steps').every(byKeyOrOnce), `${what}: steps by key, or in one pass`)
      t.ok(scansOf(onlyPlan[0]!['QUERY PLAN'][0].Plan, 'tenants').every(byTenantKey), `${what}: each due delivery's tenant by key`)
    }
    await client.query('set plan_cache_mode = auto')
    const { rows: claimed } = await client.query<{ webhookUrl: string; serviceName: string; stepId: string }>(execute)
    t.equal(claimed.length, 40, 'forty deliveries claimed')
    t.ok(claimed.every((c) => c.webhookUrl === 'http://127.0.0.1:9/hook' && c.serviceName === 'ValueCo' && c.stepId), 'each with its service\'s call and its step')
  })
}

t.test('a page of records looks each record up by its key, however many records the tenant has and without statistics', async (t) => {
  const { database, client } = await emptyDatabase(t)
  const tenant = '00000000-0000-7000-8000-000000000001'
  await client.query('set session_replication_role = replica') // no triggers: records without their tenant
  const { rows: records } = await client.query<{ id: string }>(`
    insert into properties (tenant_id, id, fields) select $1, gen_random_uuid(), jsonb_build_object('n', n) from generate_series(1, 3000) n
    returning id`, [tenant])
  const ids = records.slice(100, 200).map((r) => r.id)
  for (const count of [1, 10, 50, 100]) {
    const plan = await planOf(client, inlined(client, recordSlices('properties', tenant, ids.slice(0, count)).compile(database.db)))
    t.match(plan, /"Index Name":"properties_pkey"[^}]*"Index Cond":"\(\(tenant_id = k\.tenant_id\) AND \(id = k\.id\)\)"/, `${count}: each record through the key with both columns`)
    t.notMatch(plan, /Bitmap|Hash Join|Merge Join|Seq Scan/, `${count}: no walk of the tenant's records`)
  }
  const { rows } = await recordSlices('properties', tenant, [...ids.slice(0, 3), ids[0]!]).execute(database.db)
  t.same(rows.map((r) => r.id), [...ids.slice(0, 3)].sort(), 'each record once, in id order')
})

t.test('the steps at positions are each looked up by the position key, without statistics', async (t) => {
  const { database, client } = await emptyDatabase(t)
  const tenant = '00000000-0000-7000-8000-000000000001'
  const steps = await twoStepProcesses(client, tenant, 1500)
  const wanted = steps.filter((s) => s.position === 2).slice(0, 60).map(({ tenant_id, instance_id, position }) => ({ tenant_id, instance_id, position }))
  const plan = await planOf(client, inlined(client, stepsAt(wanted).compile(database.db)))
  t.match(plan, /"Index Name":"instance_steps_instance_position_key"/, 'through the position key')
  t.notMatch(plan, /Bitmap|Hash Join|Merge Join|Seq Scan/, 'no walk of the tenant\'s steps')
  t.equal((await stepsAt(wanted).execute(database.db)).rows.length, 60, 'each step found')
})

// After a long outage a deadline sweep (or a start of waiting steps, or an automatic step's batch)
// takes a hundred steps across as many tenants, and reads their full rows and their processes'.
t.test('the chores read the steps they took and their processes one primary key lookup each, however many rows their tenants hold, with statistics and without', async (t) => {
  const { database, client } = await emptyDatabase(t)
  await client.query('set session_replication_role = replica') // no triggers: rows without their templates and users
  // 40 tenants of 500 processes each, a step each; a batch takes the first five of each tenant's steps.
  const { rows } = await client.query<{ tenant_id: string; instance_id: string; step_id: string; n: number }>(`
    with processes as (
      insert into process_instances (tenant_id, id, template_id, template_name, responsible_user_id, controller_user_id, status, current_position)
      select t, gen_random_uuid(), gen_random_uuid(), 'Plans', gen_random_uuid(), gen_random_uuid(), 'running', 1
      from (select gen_random_uuid() as t from generate_series(1, 40)) tenants cross join generate_series(1, 500)
      returning tenant_id, id
    ), steps as (
      insert into instance_steps (tenant_id, id, instance_id, position, kind, name, start_mode, responsibility, refers_to_property, refers_to_address, state)
      select tenant_id, gen_random_uuid(), id, 1, 'task', 'step', 'afterPrevious', 'processResponsible', false, false, 'due' from processes
      returning tenant_id, id, instance_id
    )
    select tenant_id, instance_id, id as step_id, row_number() over (partition by tenant_id order by id)::int as n from steps`)
  const refs = rows.filter((r) => r.n <= 5).map(({ tenant_id, instance_id, step_id }) => ({ tenant_id, instance_id, step_id }))
  const statements = await statementsOf(databaseUrl(database.name), /process_instances|instance_steps/, (db) => pairWithInstances(db, refs))
  t.equal(statements.length, 2, 'one statement for the processes, one for the steps')
  for (const statistics of ['without statistics', 'analyzed']) {
    if (statistics === 'analyzed') await client.query('analyze process_instances; analyze instance_steps')
    for (const statement of statements) {
      const table = /instance_steps/.test(statement.sql) ? 'instance_steps' : 'process_instances'
      const plan = await planOf(client, inlined(client, statement))
      t.match(plan, new RegExp(`"Index Name":"${table}_pkey"[^}]*"Index Cond":"\\(\\(tenant_id = k\\.tenant_id\\) AND \\(id = k\\.id\\)\\)"`),
        `${table}, ${statistics}: each row through the primary key with both columns`)
      t.notMatch(plan, /Bitmap|Hash Join|Merge Join|Seq Scan/, `${table}, ${statistics}: no walk of the tenants' rows`)
    }
  }
  const paired = await pairWithInstances(database.db, refs)
  t.equal(paired.length, 200, 'every step found, with its process')
  t.ok(paired.every(({ instance, step }) => instance.id === step.instance_id && instance.tenant_id === step.tenant_id), 'each step with its own process')
})

// The mails a worker sent or put back, and the users and records a chore's batch names, span as many
// tenants as the batch: each row by its key, not every row of those tenants (sent mails pile up).
t.test('a batch\'s mails, users and records are each found by their key with both columns, however many rows their tenants hold, with statistics and without', async (t) => {
  const { database, client } = await emptyDatabase(t)
  await client.query('set session_replication_role = replica') // no foreign keys: rows without their tenants
  const tenants = (await client.query<{ id: string }>('select gen_random_uuid() as id from generate_series(1, 40)')).rows.map((r) => r.id)
  const rowsOf = async (table: string, insert: string) => (await client.query<{ tenant_id: string; id: string; n: number }>(`
    with made as (insert into ${table} ${insert} returning tenant_id, id)
    select tenant_id, id, row_number() over (partition by tenant_id order by id)::int as n from made`, [tenants])).rows
    .filter((r) => r.n <= 5).map(({ tenant_id, id }) => ({ tenant_id, id }))
  const mails = await rowsOf('outbox_mails', `(tenant_id, id, dedupe_key, kind, to_address, subject, body, sent_at)
    select t, gen_random_uuid(), gen_random_uuid()::text, 'deadlineMissed', 'a@example.com', 's', 'b', case when i > 5 then now() end
    from unnest($1::uuid[]) t cross join generate_series(1, 500) i`)
  const users = await rowsOf('users', `(tenant_id, id, name, email) select t, gen_random_uuid(), 'U', i || '@example.com'
    from unnest($1::uuid[]) t cross join generate_series(1, 500) i`)
  const properties = await rowsOf('properties', `(tenant_id, id) select t, gen_random_uuid() from unnest($1::uuid[]) t cross join generate_series(1, 500)`)
  const claimed = mails.map((m) => ({ ...m, attempt_count: 1 })) as unknown as ClaimedMail[]
  const url = databaseUrl(database.name)
  const statements = [
    ...await statementsOf(url, /outbox_mails/, (db) => markSent(db, claimed, new Date())),
    ...await statementsOf(url, /outbox_mails/, (db) => releaseMails(db, claimed)),
    ...await statementsOf(url, /"users"/, (db) => findUsers(db, users)),
    ...await statementsOf(url, /"properties"/, (db) => findRecords(db, 'properties', properties))
  ]
  t.equal(statements.length, 4, 'one statement each')
  // Planned with its values on every run, as planned here: a kept plan counts an array as ten elements (byKeys).
  t.ok(statements.every((statement) => statement.sql.includes(CUSTOM_PLAN)), 'each planned with its values')
  for (const statistics of ['without statistics', 'analyzed']) {
    if (statistics === 'analyzed') await client.query('analyze outbox_mails; analyze users; analyze properties')
    for (const statement of statements) {
      const table = /outbox_mails/.test(statement.sql) ? 'outbox_mails' : /"users"/.test(statement.sql) ? 'users' : 'properties'
      const plan = await planOf(client, inlined(client, statement))
      t.match(plan, new RegExp(`"Index Name":"${table}_pkey"`), `${table}, ${statistics}: through the primary key`)
      const conditions = [...plan.matchAll(/"Index Cond":"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!)
      t.ok(conditions.length > 0 && conditions.every((c) => /tenant_id = .*\bid = /.test(c)), `${table}, ${statistics}: each lookup by tenant and id, not by tenant alone`)
      t.notMatch(plan, /Seq Scan/, `${table}, ${statistics}: no walk of the table`)
    }
  }
  t.equal((await findUsers(database.db, users)).size, 200, 'every user found')
  t.equal((await findRecords(database.db, 'properties', properties)).size, 200, 'every record found')
})

// On a small table a walk of it is cheaper, so this only asks whether each statement's condition lets
// Postgres use the partial index meant for it (a condition it cannot prove the index's predicate from
// walks the table, or the whole primary key, however large the table grows).
// A scrape of /metrics counts the open work. Migration 0031 made the assignee's index cover every
// assigned step, finished ones too, and the counts of due, running and failed steps then had no index
// but the whole table's: each scrape read every step of the history.
t.test('the metrics\' queue figures count each kind of open rows through a partial index over open rows alone, on an empty database', async (t) => {
  const { database, client } = await emptyDatabaseToRead(t)
  await client.query('set enable_seqscan = off')
  const plan = await planOf(client, inlined(client, queueFiguresStatement(new Date('2030-06-14T01:00:00Z')).compile(database.db)))
  t.notMatch(plan, /Seq Scan/, 'no table read whole')
  const indexes = [...new Set(plan.match(/"Index Name":"[^"]+"/g)?.map((name) => name.slice(14, -1)))]
  const { rows: full } = await client.query<{ name: string }>('select indexrelid::regclass::text as name from pg_index where indpred is null and indexrelid::regclass::text = any($1)', [indexes])
  t.same(full, [], `each through a partial index (${indexes.join(', ')})`)
})

t.test('the retention can find each kind of old rows through its own partial index, in its order', async (t) => {
  const { database, client } = await emptyDatabaseToRead(t)
  const indexes = ['deliveries_trigger_finished_idx', 'activities_unbound_created_idx', 'outbox_mails_sent_idx', 'outbox_mails_failed_idx',
    'autostart_runs_record_created_idx', 'autostart_runs_date_idx']
  const kinds = oldRowsOf(new Date('2030-06-14T01:00:00Z'), 90)
  t.equal(kinds.length, indexes.length)
  await client.query('set enable_seqscan = off')
  await client.query('set enable_sort = off')
  await client.query('set plan_cache_mode = force_generic_plan')
  for (const [n, rows] of kinds.entries()) {
    const statement = oldRowsRemoval(rows, 500).compile(database.db)
    await client.query(`prepare remove_old_${n} as ${statement.sql}`)
    const plans = {
      kept: await planOf(client, `execute remove_old_${n} (${statement.parameters.map((value) => literalOf(client, value)).join(', ')})`),
      'with its values': await planOf(client, inlined(client, statement))
    }
    for (const [name, plan] of Object.entries(plans)) {
      const old = /"Subplan Name":"CTE old".*?"Index Name":"([^"]+)"/.exec(plan)?.[1]
      t.equal(old, indexes[n], `${rows.table}, ${name}: through ${indexes[n]}`)
      t.notMatch(plan, /"Seq Scan"|"Sort"/, `${rows.table}, ${name}: in the index's order`)
    }
  }
})

// The retention counts the steps of the processes it locks, to take no more at once than a statement
// removes within its timeout: each count reads the position key of that process's steps alone.
t.test('the retention finds the old processes through their partial index, and counts the steps of each through the position key', async (t) => {
  const { database, client } = await emptyDatabase(t)
  const statement = oldProcessesLocked(new Date('2030-06-14T01:00:00Z'), 500).compile(database.db)
  const counted = /"Subplan Name":"SubPlan 1".*?"Node Type":"Index Only Scan"[^}]*?"Index Name":"instance_steps_instance_position_key"/
  const planned = await planOf(client, inlined(client, statement))
  t.match(planned, counted, 'as planned: each count through the position key')
  t.notMatch(planned, /"Node Type":"Seq Scan"[^}]*"Relation Name":"instance_steps"/, 'no walk of the steps')
  await client.query('set enable_seqscan = off')
  await client.query('set enable_sort = off')
  await client.query('set plan_cache_mode = force_generic_plan')
  await client.query(`prepare old_processes as ${statement.sql}`)
  const plans = {
    kept: await planOf(client, `execute old_processes (${statement.parameters.map((value) => literalOf(client, value)).join(', ')})`),
    'with its values': await planOf(client, inlined(client, statement))
  }
  for (const [name, plan] of Object.entries(plans)) {
    t.match(plan, /"Index Name":"process_instances_finished_idx"/, `${name}: through process_instances_finished_idx`)
    t.notMatch(plan, /"Seq Scan"|"Sort"/, `${name}: in the index's order`)
    t.match(plan, counted, `${name}: each count through the position key`)
  }
})

/** What a chore sends that names `marker`, as Kysely compiles it: the chore runs on a database that notes each statement. */
async function statementsOf(url: string, marker: RegExp, chore: (db: DB) => Promise<unknown>): Promise<{ sql: string; parameters: readonly unknown[] }[]> {
  const sent: { sql: string; parameters: readonly unknown[] }[] = []
  const pool = new pg.Pool({ connectionString: url, max: 1 })
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }), log: (event) => { if (event.level === 'query') sent.push(event.query) } })
  try {
    await chore(db)
  } finally {
    await db.destroy()
  }
  return sent.filter((query) => marker.test(query.sql))
}

// The scheduler's claims and chores take no row of a tenant being deleted (tenants.deleting_since,
// src/scheduler/tenant-not-deleting.ts). Each due row they read is checked by one look-up of its
// tenant by key, never by reading every tenant (10,000 of them on each pass), and the check must not
// turn a statement from its partial index of due rows to a walk of the table.
t.test('the scheduler\'s claims and chores read their due rows through their partial index and check each row\'s tenant by key, as planned and as kept', async (t) => {
  const { database, client } = await emptyDatabase(t)
  const now = new Date()
  const past = new Date(now.getTime() - 60_000)
  await client.query('set session_replication_role = replica') // no triggers: rows without those they name
  // 2,000 tenants without statistics, the last being deleted, each with a process of each kind of due row.
  await client.query(`insert into tenants (id, name, web_id, deleting_since)
    select gen_random_uuid(), 'Plans ' || n, 'plans' || n, case when n = 2000 then $1::timestamptz end from generate_series(1, 2000) n`, [now])
  await client.query(`
    with processes as (
      insert into process_instances (tenant_id, id, template_id, template_name, responsible_user_id, controller_user_id, status, current_position)
      select t.id, gen_random_uuid(), gen_random_uuid(), 'Plans', gen_random_uuid(), gen_random_uuid(), 'running', 1
      from tenants t cross join generate_series(1, 3)
      returning tenant_id, id
    ), numbered as (select tenant_id, id, row_number() over (partition by tenant_id order by id) as n from processes)
    insert into instance_steps (tenant_id, id, instance_id, position, kind, name, start_mode, responsibility, refers_to_property,
      refers_to_address, state, automatic, start_at, deadline_at)
    select tenant_id, gen_random_uuid(), id, 1, case n when 3 then 'followUpProcess' else 'task' end, 'step', 'afterPrevious', 'processResponsible',
      false, false, case n when 1 then 'waiting' when 2 then 'due' else 'running' end, n = 2, $1, $1
    from numbered`, [past])
  await client.query(`insert into process_instances (tenant_id, id, template_id, template_name, responsible_user_id, controller_user_id, status, parent_step_id)
    select tenant_id, gen_random_uuid(), gen_random_uuid(), 'Child', gen_random_uuid(), gen_random_uuid(), 'completed', id
    from instance_steps where kind = 'followUpProcess'`)
  await client.query(`insert into outbox_mails (tenant_id, id, dedupe_key, kind, to_address, subject, body, next_attempt_at, sent_at, settle_step)
    select t.id, gen_random_uuid(), 'mail' || n, 'stepSkipped', 'clara@example.com', 'Plans', 'Body', $1, case when n = 2 then $1::timestamptz end, n = 2
    from tenants t cross join generate_series(1, 2) n`, [past])
  await client.query('set session_replication_role = origin')
  // The statements that lock run in a transaction rolled back; the chores with transactions of their
  // own run as they are (their writes may fail on the rows without templates or users: the statement
  // that checks the tenants came first).
  const rolledBack = (db: DB, lock: (trx: DB) => Promise<unknown>) =>
    db.transaction().execute(async (trx) => { await lock(trx); throw new Error('rolled back') }).catch(() => undefined)
  const chores: [string, string | string[], (db: DB) => Promise<unknown>][] = [
    ['the start of waiting steps', 'instance_steps_waiting_idx', (db) => rolledBack(db, (trx) => lockWaitingSteps(trx, now, 100))],
    ['the automatic steps\' claim', 'instance_steps_automatic_due_idx', (db) => rolledBack(db, (trx) => lockDueAutomaticSteps(trx, 100))],
    ['the deadline sweep', 'instance_steps_deadline_idx', (db) => rolledBack(db, (trx) => markOverdueSteps(trx, now, 100))],
    // A failed batch's steps, tried one by one: the same rows as the batch's, through the same index.
    ['the waiting steps to try one by one', 'instance_steps_waiting_idx', (db) => findDueWaitingStepIds(db, now, 100)],
    ['the automatic steps to try one by one', 'instance_steps_automatic_due_idx', (db) => findDueAutomaticStepIds(db, 100)],
    ['the overdue steps to try one by one', 'instance_steps_deadline_idx', (db) => findOverdueStepIds(db, now, 100)],
    ['the end of follow-ups', 'instance_steps_follow_up_running_idx', (db) => endFollowUps(db, now, 100).catch(() => undefined)],
    ['the mail claim', 'outbox_mails_pending_idx', (db) => rolledBack(db, (trx) => claimMails(trx, { now, leaseUntil: new Date(now.getTime() + 60_000), limit: 100 }))],
    ['the settling of email steps', 'outbox_mails_settle_idx', (db) => settleStepMails(db, now, 100).catch(() => undefined)],
    ['the first-due times', ['deliveries_due_idx', 'instance_steps_waiting_idx', 'instance_steps_automatic_due_idx', 'instance_steps_deadline_idx',
      'outbox_mails_pending_idx', 'outbox_mails_leased_idx', 'deliveries_lease_idx'], (db) => nextDue(db)]
  ]
  for (const [n, [what, index, chore]] of chores.entries()) {
    const [statement] = await statementsOf(databaseUrl(database.name), /deleting_since/, chore)
    t.ok(statement, `${what} checks the tenant`)
    await client.query(`prepare chore_${n} as ${statement!.sql}`)
    await client.query('set plan_cache_mode = force_generic_plan')
    const plans = {
      kept: `execute chore_${n}${statement!.parameters.length === 0 ? '' : ` (${statement!.parameters.map((value) => literalOf(client, value)).join(', ')})`}`,
      'with its values': inlined(client, statement!)
    }
    for (const [name, text] of Object.entries(plans)) {
      await client.query('begin')
      const { rows } = await client.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>(`explain (analyze, format json) ${text}`)
      await client.query('rollback')
      const plan = rows[0]!['QUERY PLAN'][0].Plan
      for (const one of [index].flat()) t.ok(indexesOf(plan).includes(one), `${what}, ${name}: through ${one} (${JSON.stringify(indexesOf(plan))})`)
      const tenants = scansOf(plan, 'tenants')
      t.ok(tenants.length > 0 && tenants.every(byTenantKey), `${what}, ${name}: each row's tenant by key (${JSON.stringify(tenants)})`)
    }
    await client.query('set plan_cache_mode = auto')
  }
})

// A failed mail is kept with its last attempt's time until the retention removes it, and mails wait for
// their next attempt while the mail server is down: the claim and the first-due time read the mails to
// send alone, and of those only the first in their order (migration 0040). The index of unsent mails
// held the failed ones too, and the first-due time took `min` over every mail to send.
t.test('the mail claim and the first-due time read the first mails to send, however many failed or wait, with statistics and without', async (t) => {
  const { database, client } = await emptyDatabase(t)
  const now = new Date()
  await client.query(`insert into tenants (id, name, web_id) values (gen_random_uuid(), 'Mails', 'mails')`)
  const mails = (rows: number, columns: string) => client.query(`insert into outbox_mails (tenant_id, id, dedupe_key, kind, to_address, subject,
    body, attempt_count, next_attempt_at, failed_at, lease_expires_at)
    select (select id from tenants), gen_random_uuid(), gen_random_uuid()::text, 'deadlineMissed', 'a@example.com', 's', 'b', 3, ${columns}
    from generate_series(1, ${rows}) n`, [now])
  await mails(20_000, `$1::timestamptz - interval '2 days' + n * interval '1 s', $1::timestamptz - interval '1 day', null`) // failed
  await mails(5_000, `$1::timestamptz + interval '10 minutes' + n * interval '10 ms', null, null`) // waiting for the next attempt
  await mails(50, `$1::timestamptz - interval '1 minute', null, $1::timestamptz + n * interval '1 s'`) // held by a worker
  const url = databaseUrl(database.name)
  const statements = [
    ...await statementsOf(url, /outbox_mails/, (db) => db.transaction().execute(async (trx) => {
      await claimMails(trx, { now, leaseUntil: new Date(now.getTime() + 60_000), limit: 100 })
      throw new Error('rolled back')
    }).catch(() => undefined)),
    ...await statementsOf(url, /outbox_mails/, (db) => nextDue(db))
  ]
  t.equal(statements.length, 2, 'the claim and the first-due time')
  for (const statistics of ['without statistics', 'analyzed']) {
    if (statistics === 'analyzed') await client.query('analyze outbox_mails')
    for (const [i, statement] of statements.entries()) {
      await client.query('begin')
      const { rows } = await client.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>(`explain (analyze, format json) ${inlined(client, statement)}`)
      await client.query('rollback')
      const read = rowsRead(rows[0]!['QUERY PLAN'][0].Plan, 'outbox_mails')
      t.ok(read <= 100, `${i === 0 ? 'the claim' : 'the first-due time'}, ${statistics}: ${read} mails read of 25,050`)
    }
  }
  const due = await nextDue(database.db)
  t.same(due.chores, new Date(now.getTime() + 1000), 'the first mail due is the end of the first lease')
})

/** How many rows the scans of a table in an analyzed plan read: those they gave and those their filters dropped. */
function rowsRead(plan: PlanNode, table: string): number {
  const own = plan['Relation Name'] === table && plan['Node Type'] !== 'ModifyTable'
    ? ((plan['Actual Rows'] ?? 0) + (plan['Rows Removed by Filter'] ?? 0) + (plan['Rows Removed by Index Recheck'] ?? 0)) * (plan['Actual Loops'] ?? 1) : 0
  return own + (plan.Plans ?? []).reduce((sum, child) => sum + rowsRead(child, table), 0)
}

t.test('the date chore asks after each template\'s candidates among its own tenant\'s records, however many records there are', async (t) => {
  const { database, client } = await emptyDatabase(t)
  const tenants = Array.from({ length: 100 }, (_, n) => `00000000-0000-7000-8000-${String(n + 1).padStart(12, '0')}`)
  const searches = (record: DateSearch['record'], ignoreYear: boolean): DateSearch[] => tenants.map((tenant, n) => ({
    template: { tenant_id: tenant, id: `00000000-0000-7000-9000-${String(n + 1).padStart(12, '0')}`, name: 'Handover', autostart: {} },
    record, field: 'handoverOn', target: '2029-05-10', ignoreYear
  }))
  const plans = async () => {
    const found: string[] = []
    for (const record of ['property', 'address'] as const) {
      for (const ignoreYear of [false, true]) found.push(await planOf(client, inlined(client, searchesWithCandidatesStatement(record, ignoreYear, searches(record, ignoreYear)).compile(database.db))))
    }
    return found
  }
  const lookups = (plan: string, name: string) => {
    t.notMatch(plan, /"Seq Scan"|Hash|Merge/, `${name}: no record table or run read whole, no hashed subplan`)
    t.match(plan, /"Index Name":"(properties|addresses)_pkey"[^}]*"Index Cond":"\(tenant_id = s\.tenant_id\)"/, `${name}: each search's records through the key, by its tenant`)
  }
  for (const [n, plan] of (await plans()).entries()) lookups(plan, `empty, no statistics (${n})`)
  // Many records and runs, spread over the tenants, with statistics.
  await client.query('set session_replication_role = replica') // no triggers: records without their tenant
  for (const table of ['properties', 'addresses']) {
    await client.query(`insert into ${table} (tenant_id, id, fields)
      select ($1::uuid[])[1 + n % 100], gen_random_uuid(), jsonb_build_object('handoverOn', '2029-08-01') from generate_series(1, 100000) n`, [tenants])
    await client.query(`analyze ${table}`)
  }
  await client.query(`insert into autostart_runs (tenant_id, id, template_id, record_kind, record_id, occurrence, outcome)
    select tenant_id, gen_random_uuid(), gen_random_uuid(), 'address', id, 'date:2029-08-01', 'started' from addresses`)
  await client.query('analyze autostart_runs')
  for (const [n, plan] of (await plans()).entries()) lookups(plan, `200,000 records, with statistics (${n})`)
})

/**
 * A list's page through the index it must take, by the plan made with the values (inlined) and by
 * the one a prepared statement keeps: read in id order, with no sort of all the rows that match.
 */
async function pagePlans(client: pg.Client, compiled: { sql: string; parameters: readonly unknown[] }) {
  const custom = await planOf(client, inlined(client, compiled))
  await client.query(`prepare page as ${compiled.sql}`)
  await client.query('set plan_cache_mode = force_generic_plan')
  const generic = await planOf(client, `execute page (${compiled.parameters.map((value) => literalOf(client, value)).join(', ')})`)
  await client.query('reset plan_cache_mode')
  await client.query('deallocate page')
  return { custom, generic }
}

t.test('a filtered list of processes or records reads its page in id order through the filter\'s index, however many rows match and without statistics', async (t) => {
  const { database, client } = await emptyDatabase(t)
  const tenant = '00000000-0000-7000-8000-000000000001'
  const template = '00000000-0000-7000-8000-000000000002'
  const record = '00000000-0000-7000-8000-000000000003'
  const user = '00000000-0000-7000-8000-000000000004'
  await client.query('set session_replication_role = replica') // no triggers: rows without what they name
  // 20,000 processes of one template, linked to one property and one address.
  await client.query(`insert into process_instances (tenant_id, id, template_id, template_name, status, responsible_user_id, controller_user_id,
      property_id, address_id, ended_at)
    select $1, gen_random_uuid(), $2, 'p', 'completed', $4, $4, $3, $3, now() from generate_series(1, 20000)`, [tenant, template, record, user])
  for (const table of ['properties', 'addresses']) {
    await client.query(`insert into ${table} (tenant_id, id, maintainer_user_id) select $1, gen_random_uuid(), $2 from generate_series(1, 20000)`, [tenant, user])
  }
  const after = 'ffffffff-ffff-7fff-bfff-ffffffffffff'
  const lists = [
    ['processes of a template', 'process_instances_template_idx', { templateId: template }],
    ['processes of a property', 'process_instances_property_idx', { propertyId: record }],
    ['processes of an address', 'process_instances_address_idx', { addressId: record }]
  ] as const
  for (const [name, index, filter] of lists) {
    for (const page of [{ list: 'processes', limit: 50 }, { list: 'processes', limit: 50, after }]) {
      const plans = await pagePlans(client, instancesPage(database.db, tenant, page, filter).compile())
      for (const [kind, plan] of Object.entries(plans)) {
        const label = `${name}${page.after ? ', a later page' : ''} (${kind} plan)`
        t.match(plan, `"Index Name":"${index}"`, `${label}: through ${index}`)
        t.notMatch(plan, /"Node Type":"(Sort|Incremental Sort)"/, `${label}: in id order, no sort of the matches`)
      }
    }
  }
  for (const table of ['properties', 'addresses'] as const) {
    for (const page of [{ list: table, limit: 50 }, { list: table, limit: 50, after: '00000000-0000-7000-8000-000000000000' }]) {
      const plans = await pagePlans(client, recordSizesPage(database.db, table, tenant, page, { maintainerUserId: user }).compile())
      for (const [kind, plan] of Object.entries(plans)) {
        const label = `${table} of a maintainer${page.after ? ', a later page' : ''} (${kind} plan)`
        t.match(plan, `"Index Name":"${table}_maintainer_idx"`, `${label}: through ${table}_maintainer_idx`)
        t.notMatch(plan, /"Node Type":"(Sort|Incremental Sort)"/, `${label}: in id order, no sort of the matches`)
      }
    }
  }
})

t.test('a list of processes by status or by their current step\'s state reads its page in id order through the status index, however many processes ended and without statistics', async (t) => {
  const { database, client } = await emptyDatabase(t)
  const tenant = '00000000-0000-7000-8000-000000000001'
  await client.query('set session_replication_role = replica') // no triggers: rows without what they name
  // 20,000 ended processes and 100 running ones.
  await client.query(`insert into process_instances (tenant_id, id, template_id, template_name, status, responsible_user_id, controller_user_id,
      current_position, ended_at)
    select $1, gen_random_uuid(), gen_random_uuid(), 'p', case when g <= 100 then 'running' else 'completed' end, gen_random_uuid(), gen_random_uuid(),
      1, case when g > 100 then now() end
    from generate_series(1, 20100) g`, [tenant])
  const after = 'ffffffff-ffff-7fff-bfff-ffffffffffff'
  const lists = [
    ['running processes', { status: 'running' }],
    ['completed processes', { status: 'completed' }],
    ['cancelled processes', { status: 'cancelled' }],
    ['processes whose current step failed', { currentStepState: 'failed' }]
  ] as const
  for (const [name, filter] of lists) {
    for (const page of [{ list: 'processes', limit: 50 }, { list: 'processes', limit: 50, after }]) {
      const plans = await pagePlans(client, instancesPage(database.db, tenant, page, filter).compile())
      for (const [kind, plan] of Object.entries(plans)) {
        const label = `${name}${page.after ? ', a later page' : ''} (${kind} plan)`
        t.match(plan, /"Index Name":"process_instances_status_idx"[^}]*"Index Cond":"\(\(status = [^"]*\) AND \(tenant_id = /, `${label}: through the status index, by status and tenant`)
        t.notMatch(plan, /"Node Type":"(Sort|Incremental Sort)"/, `${label}: in id order, no sort of the matches`)
      }
    }
  }
})

t.test('a list of a process\'s follow-ups reads its page through the parent index, however many processes the tenant has and without statistics', async (t) => {
  const { database, client } = await emptyDatabase(t)
  const tenant = '00000000-0000-7000-8000-000000000001'
  const parent = '00000000-0000-7000-8000-000000000002'
  await client.query('set session_replication_role = replica') // no triggers: rows without what they name
  // 20,000 processes, three of them follow-ups of one.
  await client.query(`insert into process_instances (tenant_id, id, template_id, template_name, status, responsible_user_id, controller_user_id,
      parent_instance_id, parent_step_id, ended_at)
    select $1, gen_random_uuid(), gen_random_uuid(), 'p', 'completed', gen_random_uuid(), gen_random_uuid(),
      case when g <= 3 then $2::uuid end, case when g <= 3 then gen_random_uuid() end, now()
    from generate_series(1, 20000) g`, [tenant, parent])
  for (const page of [{ list: 'processes', limit: 50 }, { list: 'processes', limit: 50, after: 'ffffffff-ffff-7fff-bfff-ffffffffffff' }]) {
    const plans = await pagePlans(client, instancesPage(database.db, tenant, page, { parentId: parent }).compile())
    for (const [kind, plan] of Object.entries(plans)) {
      const label = `${page.after ? 'a later page' : 'the first page'} (${kind} plan)`
      t.match(plan, '"Index Name":"process_instances_parent_idx"', `${label}: through the parent index`)
      t.notMatch(plan, /"Index Name":"process_instances_pkey"|Seq Scan/, `${label}: no walk of the tenant's processes`)
    }
  }
})

t.test('a list of failed or cancelled deliveries reads its page through the index of those alone, however many succeeded and without statistics', async (t) => {
  const { database, client } = await emptyDatabase(t)
  const tenant = '00000000-0000-7000-8000-000000000001'
  await client.query('set session_replication_role = replica') // no triggers: rows without what they name
  // 20,000 deliveries that succeeded, two that failed.
  await client.query(`insert into deliveries (tenant_id, id, service_id, source, status, finished_at)
    select $1, gen_random_uuid(), gen_random_uuid(), 'trigger', case when g <= 2 then 'failed' else 'succeeded' end, now()
    from generate_series(1, 20002) g`, [tenant])
  for (const status of ['failed', 'cancelled'] as const) {
    for (const page of [{ list: 'deliveries', limit: 50 }, { list: 'deliveries', limit: 50, after: 'ffffffff-ffff-7fff-bfff-ffffffffffff' }]) {
      const plans = await pagePlans(client, deliveriesPage(database.db, tenant, page, { status }).compile())
      for (const [kind, plan] of Object.entries(plans)) {
        const label = `${status}${page.after ? ', a later page' : ''} (${kind} plan)`
        t.match(plan, '"Index Name":"deliveries_ended_badly_idx"', `${label}: through the index of deliveries that ended badly`)
        t.notMatch(plan, /"Index Name":"deliveries_pkey"|Seq Scan/, `${label}: no walk of the tenant's deliveries`)
      }
    }
  }
  const { rows } = await client.query<{ count: number }>('select count(*)::int as count from deliveries')
  t.equal(rows[0]!.count, 20_002, 'the deliveries')
  t.equal((await deliveriesPage(database.db, tenant, { list: 'deliveries', limit: 50 }, { status: 'failed' }).execute()).length, 2, 'the failed ones listed')
})

t.test('a list of deliveries by an attempt\'s outcome reads one delivery after another through the index of attempts that did not succeed, without statistics', async (t) => {
  const { database, client } = await emptyDatabase(t)
  const tenant = '00000000-0000-7000-8000-000000000001'
  await client.query('set session_replication_role = replica') // no triggers: rows without what they name
  // 20,000 deliveries with an attempt that succeeded; 300 of them after two retries; two that failed.
  const { rows: deliveries } = await client.query<{ id: string }>(`
    insert into deliveries (tenant_id, id, service_id, source, status, finished_at)
    select $1, gen_random_uuid(), gen_random_uuid(), 'trigger', 'succeeded', now() from generate_series(1, 20000) g returning id`, [tenant])
  await client.query(`insert into delivery_attempts (tenant_id, id, delivery_id, round, attempt_number, started_at, duration_ms, outcome)
    select $1, gen_random_uuid(), d.id, 1, a.n, now(), 10, case when a.n = 3 then 'succeeded' else 'retry' end
    from (select id, row_number() over (order by id desc) as n from unnest($2::uuid[]) id) d
    cross join generate_series(1, 3) a(n) where a.n = 3 or d.n <= 300`, [tenant, deliveries.map((d) => d.id)])
  await client.query(`insert into delivery_attempts (tenant_id, id, delivery_id, round, attempt_number, started_at, duration_ms, outcome)
    select $1, gen_random_uuid(), id, 1, 4, now(), 10, 'failed' from unnest($2::uuid[]) id`, [tenant, deliveries.slice(0, 2).map((d) => d.id)])
  const retried = deliveries.map((d) => d.id).sort().reverse().slice(0, 300)

  for (const outcome of ['retry', 'failed', 'aborted'] as const) {
    for (const page of [{ list: 'deliveries', limit: 50 }, { list: 'deliveries', limit: 50, after: retried[100]! }]) {
      const plans = await pagePlans(client, deliveriesByOutcome(tenant, page, { outcome, status: 'succeeded' })!.compile(database.db))
      for (const [kind, plan] of Object.entries(plans)) {
        const label = `${outcome}${page.after ? ', a later page' : ''} (${kind} plan)`
        t.match(plan, /"Node Type":"Index Only Scan","Parent Relationship":"Outer"[^}]*"Scan Direction":"Backward","Index Name":"delivery_attempts_outcome_idx"/,
          `${label}: the attempts of the outcome through their index, newest delivery first`)
        t.notMatch(plan, /Sort|Hash|Seq Scan|"Index Name":"delivery_attempts_(pkey|delivery_idx)"/, `${label}: no read of the other attempts, no sort`)
      }
    }
  }
  const page = async (after?: string) => listDeliveries(database.db, tenant, { list: 'deliveries', limit: 50, after }, { outcome: 'retry' })
  const first = await page()
  t.same(first.map((d) => d.id), retried.slice(0, 51), 'the newest deliveries retried, each once, newest first')
  t.same((await page(retried[49])).map((d) => d.id), retried.slice(50, 101), 'and the next page after the cursor')
  t.same((await page(retried[299])).length, 0, 'none after the oldest')
  t.same((await listDeliveries(database.db, tenant, { list: 'deliveries', limit: 50 }, { outcome: 'failed', status: 'succeeded' })).length, 2,
    'other filters applied as well')
  t.same((await listDeliveries(database.db, tenant, { list: 'deliveries', limit: 50 }, { outcome: 'failed', status: 'failed' })).length, 0,
    'and a delivery they reject is left out')
  // Another tenant's newer deliveries and attempts of the same outcome are not this tenant's.
  const other = '00000000-0000-7000-8000-000000000002'
  const { rows: theirs } = await client.query<{ id: string }>(`
    insert into deliveries (tenant_id, id, service_id, source, status, finished_at)
    select $1, gen_random_uuid(), gen_random_uuid(), 'trigger', 'succeeded', now() from generate_series(1, 60) g returning id`, [other])
  await client.query(`insert into delivery_attempts (tenant_id, id, delivery_id, round, attempt_number, started_at, duration_ms, outcome)
    select $1, gen_random_uuid(), id, 1, 1, now(), 10, 'retry' from unnest($2::uuid[]) id`, [other, theirs.map((d) => d.id)])
  t.same((await page()).map((d) => d.id), first.map((d) => d.id), 'another tenant\'s retried deliveries are not listed')
  // A status whose own index holds only the deliveries that ended badly reads them, not every retried one.
  for (const status of ['failed', 'cancelled'] as const) {
    t.equal(deliveriesByOutcome(tenant, { list: 'deliveries', limit: 50 }, { outcome: 'retry', status }), undefined,
      `outcome and status ${status}: through the index of deliveries that ended badly`)
  }
})
