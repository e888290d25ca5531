import t from 'tap'
import { countWithinBudget, PAGE_MAX_BYTES, pageRequest, toPage } from '../../src/lib/pagination.js'

const row = (n: number) => ({ id: `01a2253b-3e11-7f80-9a1b-${String(n).padStart(12, '0')}` })

t.test('a page ends before its items pass the byte budget, with a cursor at its last item', async (t) => {
  const big = 'x'.repeat(1024 * 1024)
  const rows = Array.from({ length: 10 }, (_, i) => row(i))
  const page = toPage(rows, { limit: 9 }, (r) => ({ id: r.id, blob: big }))
  t.equal(page.items.length, 3, 'three items of 1 MiB fit in 4 MiB, a fourth would not')
  t.equal(pageRequest({ cursor: page.nextCursor! }).after, rows[2]!.id, 'the next page starts after the last item sent')

  const huge = toPage([row(1), row(2)], { limit: 9 }, (r) => ({ id: r.id, blob: 'x'.repeat(PAGE_MAX_BYTES + 1) }))
  t.equal(huge.items.length, 1, 'one item is always sent, however large')
  t.not(huge.nextCursor, null)

  const small = toPage([row(1), row(2), row(3)], { limit: 2 }, (r) => r)
  t.same(small.items.map((i) => i.id), [row(1).id, row(2).id], 'limit + 1 rows: the extra one only tells there is more')
  t.not(small.nextCursor, null)
  t.equal(toPage([row(1)], { limit: 2 }, (r) => r).nextCursor, null, 'the last page has no cursor')
})

t.test('countWithinBudget takes rows in order while they fit, and at least one', async (t) => {
  t.equal(countWithinBudget([3, 3, 3], 7), 2)
  t.equal(countWithinBudget([10, 1], 7), 1)
  t.equal(countWithinBudget([], 7), 0)
  t.equal(countWithinBudget([1, 1, 1], 7), 3)
})

t.test('a page\'s whole body, nextCursor and all, stays within the byte budget', async (t) => {
  const base = Buffer.byteLength(JSON.stringify({ id: row(0).id, blob: '' }))
  // Four items that, each with its comma, take exactly the budget: the page's own JSON comes on top of them.
  const blob = 'x'.repeat(PAGE_MAX_BYTES / 4 - 1 - base)
  const page = toPage(Array.from({ length: 6 }, (_, i) => row(i)), { limit: 9 }, (r) => ({ id: r.id, blob }))
  t.not(page.nextCursor, null)
  t.ok(Buffer.byteLength(JSON.stringify(page)) <= PAGE_MAX_BYTES, `${Buffer.byteLength(JSON.stringify(page))} bytes with ${page.items.length} items`)
})
