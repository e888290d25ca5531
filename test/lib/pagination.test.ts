import t from 'tap'
import { countWithinBudget, encodeCursor, listScope, PAGE_MAX_BYTES, pageRequest, toPage } from '../../src/lib/pagination.js'

const row = (n: number) => ({ id: `01a2253b-3e11-7f80-9a1b-${String(n).padStart(12, '0')}` })
const USERS = listScope('/v1/users', {})
/** A request to a list route, as pageRequest reads it. */
const listRequest = (url: string, params: Record<string, string>, query: { limit?: number; cursor?: string }) => ({ query, routeOptions: { url }, params })

t.test('a page ends before its items pass the byte budget, with a cursor at its last item', async (t) => {
  const big = 'x'.repeat(1024 * 1024)
  const rows = Array.from({ length: 10 }, (_, i) => row(i))
  const page = toPage(rows, { limit: 9, list: USERS }, (r) => ({ id: r.id, blob: big }))
  t.equal(page.items.length, 3, 'three items of 1 MiB fit in 4 MiB, a fourth would not')
  t.equal(pageRequest(listRequest('/v1/users', {}, { cursor: page.nextCursor! })).after, rows[2]!.id, 'the next page starts after the last item sent')

  const huge = toPage([row(1), row(2)], { limit: 9, list: USERS }, (r) => ({ id: r.id, blob: 'x'.repeat(PAGE_MAX_BYTES + 1) }))
  t.equal(huge.items.length, 1, 'one item is always sent, however large')
  t.not(huge.nextCursor, null)

  const small = toPage([row(1), row(2), row(3)], { limit: 2, list: USERS }, (r) => r)
  t.same(small.items.map((i: { id: string }) => i.id), [row(1).id, row(2).id], 'limit + 1 rows: the extra one only tells there is more')
  t.not(small.nextCursor, null)
  t.equal(toPage([row(1)], { limit: 2, list: USERS }, (r) => r).nextCursor, null, 'the last page has no cursor')
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
  const page = toPage(Array.from({ length: 6 }, (_, i) => row(i)), { limit: 9, list: USERS }, (r) => ({ id: r.id, blob }))
  t.not(page.nextCursor, null)
  t.ok(Buffer.byteLength(JSON.stringify(page)) <= PAGE_MAX_BYTES, `${Buffer.byteLength(JSON.stringify(page))} bytes with ${page.items.length} items`)
})

// A template's steps cursor carries the last step's position and the next step's id too, and is longer than others.
t.test('a page whose cursor carries a position and the next id stays within the byte budget too', async (t) => {
  const base = Buffer.byteLength(JSON.stringify({ id: row(0).id, blob: '' }))
  const shortEnvelope = Buffer.byteLength(JSON.stringify({ items: [], nextCursor: encodeCursor(USERS, row(0).id) }))
  // Two items that, each with its comma, fill what the budget leaves beside a cursor without a position.
  const blob = 'x'.repeat(Math.floor((PAGE_MAX_BYTES - shortEnvelope) / 2) - 1 - base)
  const page = toPage(Array.from({ length: 3 }, (_, i) => row(i)), { limit: 9, list: USERS }, (r) => ({ id: r.id, blob }))
  const last = page.items.at(-1)!
  const withPosition = { ...page, nextCursor: encodeCursor(USERS, last.id, 123_456_789, row(3).id) }
  t.ok(Buffer.byteLength(JSON.stringify(withPosition)) <= PAGE_MAX_BYTES, `${Buffer.byteLength(JSON.stringify(withPosition))} bytes with ${page.items.length} items`)
})

t.test('a cursor names its list: the route and the parent it is scoped to', async (t) => {
  const steps = (templateId: string) => listScope('/v1/process-templates/:id/steps', { id: templateId })
  const a = '01a2253b-3e11-7f80-9a1b-00000000000a'
  const b = '01a2253b-3e11-7f80-9a1b-00000000000b'
  t.equal(steps(a), steps(a), 'the same list, the same scope')
  t.not(steps(a), steps(b), 'the steps of another template are another list')
  t.not(USERS, listScope('/v1/process-templates', {}), 'another route is another list')

  const cursor = encodeCursor(steps(a), row(1).id)
  t.equal(pageRequest(listRequest('/v1/process-templates/:id/steps', { id: a }, { cursor })).after, row(1).id)
  for (const [url, params] of [['/v1/process-templates/:id/steps', { id: b }], ['/v1/users', {}]] as const) {
    t.throws(() => pageRequest(listRequest(url, params, { cursor })),
      { status: 400, errors: [{ pointer: '/querystring/cursor', detail: 'cursor does not belong to this list' }] }, `refused by ${url}`)
  }
})

t.test('a cursor issued before cursors named their list is still read, for a client paging across an upgrade', async (t) => {
  const legacy = Buffer.from(`v1:${row(7).id}`).toString('base64url')
  t.equal(pageRequest(listRequest('/v1/users', {}, { cursor: legacy })).after, row(7).id)
  t.throws(() => pageRequest(listRequest('/v1/users', {}, { cursor: Buffer.from('v1:nope').toString('base64url') })), { errors: [{ detail: 'invalid cursor' }] })
  t.throws(() => pageRequest(listRequest('/v1/users', {}, { cursor: Buffer.from(`v2:short:${row(7).id}`).toString('base64url') })), { errors: [{ detail: 'invalid cursor' }] })
})

t.test('a cursor in a list ordered by position carries the next row\'s id, which must be an id', async (t) => {
  const request = (cursor: string) => pageRequest(listRequest('/v1/users', {}, { cursor }))
  t.match(request(encodeCursor(USERS, row(1).id, 4, row(2).id)), { after: row(1).id, position: 4, next: row(2).id })
  t.match(request(encodeCursor(USERS, row(1).id, 4)), { after: row(1).id, position: 4, next: undefined }, 'a cursor issued before it named the next row')
  t.throws(() => request(Buffer.from(`v2:${USERS}:${row(1).id}:4:nope`).toString('base64url')), { errors: [{ detail: 'invalid cursor' }] })
})

t.test('a cursor names the caller whose list it is; one issued before it did is still read, for a client paging across an upgrade', async (t) => {
  const as = (caller: { kind: string; tenantId?: string }, cursor: string) => pageRequest({ ...listRequest('/v1/users', {}, { cursor }), caller })
  const tenantA = { kind: 'tenant', tenantId: '01a2253b-3e11-7f80-9a1b-0000000000aa' }
  const tenantB = { kind: 'tenant', tenantId: '01a2253b-3e11-7f80-9a1b-0000000000bb' }
  const claimA = { kind: 'claim', tenantId: tenantA.tenantId }
  const issued = pageRequest({ ...listRequest('/v1/users', {}, {}), caller: tenantA }).list
  const cursor = encodeCursor(issued, row(3).id)
  t.equal(as(tenantA, cursor).after, row(3).id)
  t.equal(as(claimA, cursor).after, row(3).id, 'an apiClaim of the tenant reads the tenant\'s lists')
  for (const caller of [tenantB, { kind: 'operator' }]) {
    t.throws(() => as(caller, cursor), { status: 400, errors: [{ pointer: '/querystring/cursor', detail: 'cursor does not belong to this list' }] }, `refused to ${caller.kind}`)
  }
  t.equal(as(tenantB, encodeCursor(USERS, row(4).id)).after, row(4).id, 'a cursor of the list without its caller, as issued before')
})
