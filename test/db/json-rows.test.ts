// Rows sent as JSON tuples come back as the rows they were, column by column, whatever their values:
// each type, null (also for jsonb, where a JSON null is SQL's null, as jsonb_to_recordset had it), a
// missing value, text that needs escaping, and the order of the rows.
import t from 'tap'
import { rowsTable, rowsText, type Column } from '../../src/db/json-rows.js'
import { Statement } from '../../src/db/statement.js'
import { createTestDatabase } from '../helpers/database.js'

const database = await createTestDatabase()
t.teardown(() => database.drop())

interface Row { id: string; label: string | null; count: number | null; flag: boolean | null; at: Date | null; data: unknown; camelCase: string | null }

const COLUMNS: Column<Row>[] = [
  ['id', 'uuid'], ['label', 'text'], ['count', 'integer'], ['flag', 'boolean'], ['at', 'timestamptz'], ['data', 'jsonb'], ['camelCase', 'uuid']
]

async function roundTrip(rows: Partial<Row>[]): Promise<Row[]> {
  const statement = new Statement()
  const table = rowsTable(statement.value(rowsText<Partial<Row>>(rows, COLUMNS)), COLUMNS, 'v')
  const { rows: back } = await statement.run<Row>(database.db, `select v.* from ${table}`)
  return back
}

t.test('every type and null come back as they went', async (t) => {
  const at = new Date('2026-12-05T01:02:03.456Z')
  const rows = await roundTrip([
    { id: '00000000-0000-7000-8000-000000000001', label: 'plain', count: 7, flag: true, at, data: { a: [1, 'x'], b: null }, camelCase: '00000000-0000-7000-8000-0000000000aa' },
    { id: '00000000-0000-7000-8000-000000000002', label: null, count: null, flag: false, at: null, data: null, camelCase: null },
    { id: '00000000-0000-7000-8000-000000000003' }
  ])
  t.same(rows, [
    { id: '00000000-0000-7000-8000-000000000001', label: 'plain', count: 7, flag: true, at, data: { a: [1, 'x'], b: null }, camelCase: '00000000-0000-7000-8000-0000000000aa' },
    { id: '00000000-0000-7000-8000-000000000002', label: null, count: null, flag: false, at: null, data: null, camelCase: null },
    { id: '00000000-0000-7000-8000-000000000003', label: null, count: null, flag: null, at: null, data: null, camelCase: null }
  ])
})

t.test('text that needs escaping, and jsonb that is not an object', async (t) => {
  const label = 'quote " backslash \\ newline \n tab \t unicode ä 😀 nul-free'
  const rows = await roundTrip([
    { id: '00000000-0000-7000-8000-000000000004', label, data: 'a string' },
    { id: '00000000-0000-7000-8000-000000000005', label: '', data: [null] },
    { id: '00000000-0000-7000-8000-000000000006', label: 'null', data: 0 }
  ])
  t.same(rows.map((r) => [r.label, r.data]), [[label, 'a string'], ['', [null]], ['null', 0]])
})

t.test('rows come back in their order, and none when there are none', async (t) => {
  const ids = Array.from({ length: 50 }, (_, i) => `00000000-0000-7000-8000-${String(1000 - i).padStart(12, '0')}`)
  t.same((await roundTrip(ids.map((id) => ({ id })))).map((r) => r.id), ids)
  t.same(await roundTrip([]), [])
})
