// A Statement numbers its values' placeholders in the order they are given, wherever the text puts
// them; byKeysText finds exactly the rows it is given, one tenant or several, after other values.
import t from 'tap'
import { byKeysText } from '../../src/db/by-keys.js'
import { CUSTOM_PLAN } from '../../src/db/postgres.js'
import { identifier, Statement } from '../../src/db/statement.js'
import { createTestDatabase } from '../helpers/database.js'

const database = await createTestDatabase()
t.teardown(() => database.drop())

const A = '00000000-0000-7000-8000-00000000000a'
const B = '00000000-0000-7000-8000-00000000000b'
const id = (n: number) => `00000000-0000-7000-8000-00000000010${n}`
// Ids 1–3 in tenant A, 1–2 in tenant B: the same id under another tenant is another row.
const TABLE = `(values ${[[A, 1], [A, 2], [A, 3], [B, 1], [B, 2]].map(([tenant, n]) => `('${tenant}'::uuid, '${id(n as number)}'::uuid)`).join(', ')}) as k(tenant_id, id)`

async function found(keys: { tenant_id: string; id: string }[]) {
  const statement = new Statement()
  const before = statement.value('before')
  const condition = byKeysText(statement, 'k', keys)
  const after = statement.value('after')
  const text = `select ${after}::text as last, k.tenant_id, k.id from ${TABLE} where ${condition} and ${before}::text = 'before' order by k.tenant_id, k.id`
  const { rows } = await statement.run<{ last: string; tenant_id: string; id: string }>(database.db, text)
  return { text, values: statement.values, rows }
}

t.test('one key: a plain condition, placed after the values given before it', async (t) => {
  const { text, values, rows } = await found([{ tenant_id: B, id: id(2) }])
  t.notMatch(text, CUSTOM_PLAN)
  t.same(values, ['before', B, id(2), 'after'])
  t.same(rows, [{ last: 'after', tenant_id: B, id: id(2) }])
})

t.test('keys of two tenants: one group each, planned with its values', async (t) => {
  const { text, values, rows } = await found([{ tenant_id: A, id: id(1) }, { tenant_id: B, id: id(1) }, { tenant_id: A, id: id(3) }, { tenant_id: A, id: id(1) }])
  t.match(text, CUSTOM_PLAN)
  t.same(values, ['before', A, [id(1), id(3)], B, [id(1)], 'after'], 'each id once, grouped by tenant')
  t.same(rows.map((r) => [r.tenant_id, r.id]), [[A, id(1)], [A, id(3)], [B, id(1)]], "not B's id 3, which is none, nor A's id 2")
})

t.test('no keys: nothing', async (t) => {
  const { rows, values } = await found([])
  t.same(rows, [])
  t.same(values, ['before', 'after'])
})

t.test('a name is quoted, a quote in it doubled', async (t) => {
  t.equal(identifier('tenant_id'), '"tenant_id"')
  t.equal(identifier('a"b'), '"a""b"')
})
