import pg from 'pg'
import t from 'tap'
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

t.test('every foreign key check on an empty database goes through the referenced key\'s own index', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const client = new pg.Client({ connectionString: databaseUrl(database.name) })
  await client.connect()
  t.teardown(() => client.end())

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
