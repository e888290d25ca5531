import t from 'tap'
import { sql } from '../../../src/db/kysely.js'
import { addressKind } from '../../../src/modules/addresses/routes.js'
import { propertyKind } from '../../../src/modules/properties/routes.js'
import * as records from '../../../src/modules/records/service.js'
import { setupApp } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { holdRow, waitForLockWait } from '../../helpers/database.js'
import { watchedApp } from '../../helpers/watched-app.js'

// One app and database for the file: each test works in tenants of its own.
const ctx = await setupApp(t)

for (const kind of [propertyKind, addressKind]) {
  const collection = `/v1/${kind.path}`

  t.test(`${kind.path}: create, read, list, filter, paginate`, async (t) => {
    const { client } = await ctx.newTenant()
    const anna = (await client.post('/v1/users', { name: 'Anna', email: 'anna@example.com' })).data

    const berlin = await client.post(collection, { maintainerUserId: anna.id, fields: { price: 250000, city: 'Berlin' } })
    t.equal(berlin.statusCode, 201)
    t.equal(berlin.headers.etag, '"1"')
    t.match(berlin.data, { id: String, maintainerUserId: anna.id, fields: { price: 250000, city: 'Berlin' }, version: 1, createdAt: String })
    const empty = await client.post(collection, {})
    t.same([empty.data.maintainerUserId, empty.data.fields], [null, {}], 'defaults')
    const hamburg = await client.post(collection, { fields: { city: 'Hamburg', geo: { lat: 53.5 } } })

    const read = await client.get(`${collection}/${berlin.data.id}`)
    t.same(read.data, berlin.data)
    t.equal(read.headers.etag, '"1"')

    const ids = (query = '') => client.get(`${collection}${query}`).then((r) => r.data.items.map((i: { id: string }) => i.id))
    t.same(await ids(), [berlin.data.id, empty.data.id, hamburg.data.id], 'oldest first')
    t.same(await ids(`?maintainerUserId=${anna.id}`), [berlin.data.id])
    t.same(await ids(`?fields=${encodeURIComponent('{"city":"Hamburg"}')}`), [hamburg.data.id])
    t.same(await ids(`?fields=${encodeURIComponent('{"geo":{"lat":53.5}}')}`), [hamburg.data.id], 'nested containment')
    t.same(await ids(`?fields=${encodeURIComponent('{"city":"Berlin","price":1}')}`), [])
    assertProblem(t, await client.get(`${collection}?fields=${encodeURIComponent('["city"]')}`), 400, /\/querystring\/fields/)
    assertProblem(t, await client.get(`${collection}?fields=city:Berlin`), 400, /JSON object/)
    assertProblem(t, await client.get(`${collection}?maintainerUserId=anna`), 400)

    const first = await client.get(`${collection}?limit=2`)
    t.equal(first.data.items.length, 2)
    const second = await client.get(`${collection}?limit=2&cursor=${first.data.nextCursor}`)
    t.same(second.data.items.map((i: { id: string }) => i.id), [hamburg.data.id])
    t.equal(second.data.nextCursor, null)
    assertProblem(t, await client.get(`${collection}?cursor=bogus`), 400, /\/querystring\/cursor/)

    const bare = await client.post(collection)
    t.equal(bare.statusCode, 201, 'no body is an empty one')
    t.same([bare.data.maintainerUserId, bare.data.fields], [null, {}])
  })

  t.test(`${kind.path}: a record that stops matching the filter after its page was sized is left out of the page`, async (t) => {
    const watched = await watchedApp(t, ctx)
    const { client, key } = await ctx.newTenant()
    const anna = (await client.post('/v1/users', { name: 'Anna', email: 'anna@example.com' })).data
    const ben = (await client.post('/v1/users', { name: 'Ben', email: 'ben@example.com' })).data
    const made = []
    for (const n of [1, 2, 3, 4]) made.push((await client.post(collection, { maintainerUserId: anna.id, fields: { city: 'Berlin', n } })).data.id)
    type Sent = { id: string; maintainerUserId: string; fields: { city: string } }
    const changes = [
      { query: `maintainerUserId=${anna.id}`, change: { maintainerUserId: ben.id }, matches: (r: Sent) => r.maintainerUserId === anna.id },
      { query: `fields=${encodeURIComponent('{"city":"Berlin"}')}`, change: { fields: { city: 'Hamburg' } }, matches: (r: Sent) => r.fields.city === 'Berlin' }
    ]
    for (const [i, { query, change, matches }] of changes.entries()) {
      const moved = made[i + 1]!
      // Right after the statement that sizes the page: the record is changed so that it no longer matches.
      watched.after(new RegExp(`^select "id", "fields_bytes" from "${kind.table}"`), async () => {
        const patched = await client.patch(`${collection}/${moved}`, change)
        t.equal(patched.statusCode, 200, patched.body)
      })
      const page = await watched.as(key).get(`${collection}?${query}&limit=3`)
      t.equal(page.statusCode, 200, page.body)
      t.notOk(page.data.items.some((r: Sent) => r.id === moved), `${query}: the changed record is left out`)
      t.ok(page.data.items.every(matches), `${query}: every record sent matches`)
      const next = await client.get(`${collection}?${query}&limit=3&cursor=${page.data.nextCursor}`)
      t.same([...page.data.items, ...next.data.items].map((r: Sent) => r.id), made.filter((id) => id !== moved),
        `${query}: the next page goes on after the page's last record`)
    }
  })

  t.test(`${kind.path}: PATCH merges fields, honours If-Match, and DELETE removes`, async (t) => {
    const { client } = await ctx.newTenant()
    const anna = (await client.post('/v1/users', { name: 'Anna', email: 'anna@example.com' })).data
    const created = (await client.post(collection, { fields: { price: 1, city: 'Berlin', tags: ['a'] } })).data
    const url = `${collection}/${created.id}`

    const merged = await client.patch(url, { fields: { price: 2, city: null, rooms: 3, gone: null } })
    t.equal(merged.statusCode, 200)
    t.same(merged.data.fields, { price: 2, tags: ['a'], rooms: 3 }, 'replaced, removed, added, kept')
    t.equal(merged.data.version, 2)
    t.equal(merged.headers.etag, '"2"')

    const maintained = await client.patch(url, { maintainerUserId: anna.id })
    t.same([maintained.data.maintainerUserId, maintained.data.fields], [anna.id, merged.data.fields], 'fields untouched')
    t.equal((await client.patch(url, { maintainerUserId: null })).data.maintainerUserId, null)

    const stale = await client.patch(url, { fields: { price: 3 } }, { 'if-match': '"2"' })
    assertProblem(t, stale, 412, /version 4/)
    t.equal(stale.headers.etag, '"4"', 'a 412 carries the current ETag')
    assertProblem(t, await client.patch(url, { fields: { price: 3 } }, { 'if-match': 'yesterday' }), 400)
    const matched = await client.patch(url, { fields: { price: 3 } }, { 'if-match': '"4"' })
    t.equal(matched.statusCode, 200)
    t.same([matched.data.version, matched.data.fields.price], [5, 3])
    t.equal((await client.get(url)).data.version, 5, 'the stale patch changed nothing')

    const staleList = await client.patch(url, { fields: { price: 4 } }, { 'if-match': '"3", "4"' })
    assertProblem(t, staleList, 412, /at version 5, not 3 or 4/)
    t.equal(staleList.headers.etag, '"5"')
    const listed = await client.patch(url, { fields: { price: 4 } }, { 'if-match': '"4", W/"5"' })
    t.same([listed.statusCode, listed.data.version], [200, 6], 'any version of a list may be current, weak ones too')
    t.equal((await client.patch(url, { fields: { price: 5 } }, { 'if-match': ', "6" ,, "7",' })).data.version, 7, 'empty list elements are ignored')
    for (const malformed of ['"7", yesterday', '*, "7"', '"7" "8"', ',']) {
      assertProblem(t, await client.patch(url, { fields: { price: 6 } }, { 'if-match': malformed }), 400, /If-Match/)
    }
    t.equal((await client.get(url)).data.fields.price, 5)

    // A delete honours If-Match as an update does: a client deleting what it read must not delete what it has not seen.
    const staleDelete = await client.delete(url, { 'if-match': '"6"' })
    assertProblem(t, staleDelete, 412, /at version 7, not 6/)
    t.equal(staleDelete.headers.etag, '"7"')
    assertProblem(t, await client.delete(url, { 'if-match': 'yesterday' }), 400, /If-Match/)
    t.equal((await client.get(url)).statusCode, 200, 'the stale delete kept the record')
    t.equal((await client.delete(url, { 'if-match': '"7"' })).statusCode, 204)
    assertProblem(t, await client.get(url), 404)
    const another = (await client.post(collection, { fields: { price: 1 } })).data
    t.equal((await client.delete(`${collection}/${another.id}`)).statusCode, 204, 'without If-Match, any version')
    assertProblem(t, await client.patch(url, { fields: { a: 1 } }), 404)
    assertProblem(t, await client.patch(url, { fields: { a: 1 } }, { 'if-match': '"7"' }), 404)
    assertProblem(t, await client.delete(url), 404)
  })

  t.test(`${kind.path}: requests that fail the schema answer 400`, async (t) => {
    const { client } = await ctx.newTenant()
    const created = (await client.post(collection, {})).data
    const url = `${collection}/${created.id}`

    assertProblem(t, await client.post(collection, { fields: [] }), 400, /body\/fields/)
    assertProblem(t, await client.post(collection, { fields: 'price=1' }), 400, /body\/fields/)
    assertProblem(t, await client.post(collection, { fields: null }), 400, /body\/fields/)
    assertProblem(t, await client.post(collection, { maintainerUserId: 'anna' }), 400, /body\/maintainerUserId/)
    assertProblem(t, await client.post(collection, { maintainerUserId: 5 }), 400, /body\/maintainerUserId/)
    assertProblem(t, await client.post(collection, { price: 1 }), 400, /body\/price/)
    assertProblem(t, await client.post(collection, '{"fields":', { 'content-type': 'application/json' }), 400)
    assertProblem(t, await client.patch(url, {}), 400)
    assertProblem(t, await client.patch(url, { fields: 3 }), 400, /body\/fields/)
    assertProblem(t, await client.patch(url, { fields: {}, version: 2 }), 400, /body\/version/)
    assertProblem(t, await client.get(`${collection}/not-a-uuid`), 400, /params\/id/)
    t.equal((await client.get(url)).data.version, 1, 'unchanged')
  })

  t.test(`${kind.path}: the maintainer must be a user of the caller's tenant`, async (t) => {
    const a = await ctx.newTenant()
    const b = await ctx.newTenant()
    const foreign = (await b.client.post('/v1/users', { name: 'Bea', email: 'bea@example.com' })).data
    const unknown = '01900000-0000-7000-8000-000000000000'

    for (const userId of [foreign.id, unknown]) {
      const response = await a.client.post(collection, { maintainerUserId: userId })
      assertProblem(t, response, 422)
      t.same(response.data.errors.map((e: { pointer: string }) => e.pointer), ['/body/maintainerUserId'])
    }
    const created = (await a.client.post(collection, { fields: { a: 1 } })).data
    const patched = await a.client.patch(`${collection}/${created.id}`, { maintainerUserId: foreign.id, fields: { a: 2 } })
    assertProblem(t, patched, 422, /maintainerUserId/)
    t.same((await a.client.get(`${collection}/${created.id}`)).data, created, 'unchanged')
  })

  t.test(`${kind.path}: concurrent patches of different fields all survive`, async (t) => {
    const tenant = await ctx.newTenant()
    const created = (await tenant.client.post(collection, { fields: { keep: true } })).data
    const keys = Array.from({ length: 12 }, (_, i) => `k${i}`)

    const responses = await Promise.all(keys.map((key, i) => tenant.client.patch(`${collection}/${created.id}`, { fields: { [key]: i } })))
    t.same(responses.map((r) => r.statusCode), keys.map(() => 200))
    t.same(new Set(responses.map((r) => r.data.version)).size, keys.length, 'each patch got a version of its own')
    const final = (await tenant.client.get(`${collection}/${created.id}`)).data
    t.same(final.fields, { keep: true, ...Object.fromEntries(keys.map((key, i) => [key, i])) })
    t.equal(final.version, keys.length + 1)
  })

  t.test(`${kind.path}: a PATCH that changes nothing keeps the version and the ETag`, async (t) => {
    const { client } = await ctx.newTenant()
    const anna = (await client.post('/v1/users', { name: 'Anna', email: 'anna@example.com' })).data
    const created = (await client.post(collection, { maintainerUserId: anna.id, fields: { price: 1, tags: ['a'], geo: { lat: 1, lng: 2 } } })).data
    const url = `${collection}/${created.id}`
    ctx.clock.advance(1000)
    for (const body of [
      { fields: {} }, { fields: { price: 1 } }, { fields: { geo: { lng: 2, lat: 1 }, tags: ['a'] } }, { fields: { absent: null } },
      { maintainerUserId: anna.id }, { maintainerUserId: anna.id, fields: { price: 1.0 } }
    ]) {
      const same = await client.patch(url, body, { 'if-match': '"1"' })
      t.equal(same.statusCode, 200, JSON.stringify(body))
      t.same(same.data, created, `${JSON.stringify(body)}: the record as it was, updatedAt too`)
      t.equal(same.headers.etag, '"1"')
    }
    t.same((await client.get(url)).data, created, 'stored unchanged')
    t.equal((await client.get(`${url}/activities`)).data.items.length, 0, 'nothing logged')
    assertProblem(t, await client.patch(url, { fields: { price: 1 } }, { 'if-match': '"0"' }), 412, /version 1/)
    const changed = await client.patch(url, { fields: { price: 2 } }, { 'if-match': '"1"' })
    t.same([changed.data.version, changed.headers.etag], [2, '"2"'], 'a change still moves the version')
  })

  t.test(`${kind.path}: a field name with a comma is refused, since a query call lists changed fields comma-separated`, async (t) => {
    const { client, id: tenantId } = await ctx.newTenant()
    const created = await client.post(collection, { fields: { 'a,b': 1, c: 2 } })
    assertProblem(t, created, 422, /comma/)
    t.same(created.data.errors, [{ pointer: '/body/fields/a,b', detail: 'a field name may not contain a comma' }])
    // A create is no merge patch: its null is stored as the field's value, so its name is held to the rule too.
    const nullCreated = await client.post(collection, { fields: { 'a,b': null, c: 2 } })
    assertProblem(t, nullCreated, 422, /comma/)
    t.same(nullCreated.data.errors, [{ pointer: '/body/fields/a,b', detail: 'a field name may not contain a comma' }])
    t.same((await client.get(collection)).data.items, [], 'nothing created')
    const record = (await client.post(collection, { fields: { c: 2 } })).data
    const url = `${collection}/${record.id}`
    const patched = await client.patch(url, { fields: { c: 3, 'x,y': { z: 1 } } })
    assertProblem(t, patched, 422, /comma/)
    t.same(patched.data.errors, [{ pointer: '/body/fields/x,y', detail: 'a field name may not contain a comma' }])
    t.same((await client.get(url)).data, record, 'nothing written')
    t.equal((await client.patch(url, { fields: { c: { 'nested,key': 1 } } })).statusCode, 200, 'nested keys are not field names')

    // A record holding such a name from before can still lose it.
    await ctx.db.updateTable(kind.table).set({ fields: JSON.stringify({ 'old,name': 1 }) }).where('tenant_id', '=', tenantId).where('id', '=', record.id).execute()
    const removed = await client.patch(url, { fields: { 'old,name': null } })
    t.same([removed.statusCode, removed.data.fields], [200, {}])
  })

  t.test(`${kind.path}: an empty field name is refused, since a query call would list it as an empty entry of changedFields`, async (t) => {
    const { client, id: tenantId } = await ctx.newTenant()
    for (const fields of [{ '': 1, c: 2 }, { '': null, c: 2 }]) {
      const created = await client.post(collection, { fields })
      assertProblem(t, created, 422, /may not be empty/)
      t.same(created.data.errors, [{ pointer: '/body/fields/', detail: 'a field name may not be empty' }], JSON.stringify(fields))
    }
    t.same((await client.get(collection)).data.items, [], 'nothing created')
    const record = (await client.post(collection, { fields: { c: 2 } })).data
    const url = `${collection}/${record.id}`
    const patched = await client.patch(url, { fields: { c: 3, '': 'x' } })
    assertProblem(t, patched, 422, /may not be empty/)
    t.same(patched.data.errors, [{ pointer: '/body/fields/', detail: 'a field name may not be empty' }])
    t.same((await client.get(url)).data, record, 'nothing written')

    // A record holding one from before can still lose it.
    await ctx.db.updateTable(kind.table).set({ fields: JSON.stringify({ '': 1, c: 2 }) }).where('tenant_id', '=', tenantId).where('id', '=', record.id).execute()
    const removed = await client.patch(url, { fields: { '': null } })
    t.same([removed.statusCode, removed.data.fields], [200, { c: 2 }])
  })

  t.test(`${kind.path}: a write reports the fields it changed`, async (t) => {
    const { id: tenantId } = await ctx.newTenant()
    const created = await records.createRecord(ctx.db, ctx.clock, kind, tenantId, { fields: { price: 1, city: 'Berlin', tags: ['a'] } })
    t.same(created.changedFields, ['city', 'price', 'tags'])
    const id = created.record.id

    const update = (fields: Record<string, unknown>) => records.updateRecord(ctx.db, ctx.clock, kind, tenantId, id, { fields })
    t.same((await update({ price: 2, city: 'Berlin', tags: ['a'], gone: null })).changedFields, ['price'], 'equal values and absent removals are no change')
    t.same((await update({ city: null, rooms: 3 })).changedFields, ['city', 'rooms'])
    t.same((await records.updateRecord(ctx.db, ctx.clock, kind, tenantId, id, { maintainerUserId: null })).changedFields, [])

    // Each concurrent write must compare against the version it replaced, not a stale read.
    const keys = Array.from({ length: 8 }, (_, i) => `c${i}`)
    const writes = await Promise.all(keys.map((key) => update({ [key]: key })))
    t.same(writes.map((w) => w.changedFields), keys.map((key) => [key]))
  })
}

t.test('a list holds a record whose numbers Postgres prints long, and multi-byte text cut across slices, as a read shows them', async (t) => {
  // 1e308 is 7 bytes of the record's JSON and 309 digits as Postgres prints it: fields within 256 KiB
  // are some 11 MB of text in a list. Cut by characters, each slice walked that text from its start
  // (about 18 s), past the statement timeout, so no page holding the record could be listed.
  const app = await setupApp(t, { DATABASE_STATEMENT_TIMEOUT_MS: '3000' })
  const { client } = await app.newTenant()
  const numbers = await client.post('/v1/properties', { fields: { n: new Array(37_000).fill(1e308) } })
  t.equal(numbers.statusCode, 201, numbers.body.slice(0, 200))
  const text = await client.post('/v1/properties', { fields: { note: 'ä€😀'.repeat(20_000) } })
  t.equal(text.statusCode, 201)
  const listed = await client.get('/v1/properties?limit=200')
  t.equal(listed.statusCode, 200, listed.body.slice(0, 200))
  t.same(listed.data?.items.map((i: { fields: unknown }) => i.fields), [numbers.data.fields], 'a page of its own: its text passes 4 MiB')
  const next = await client.get(`/v1/properties?limit=200&cursor=${listed.data?.nextCursor}`)
  t.same(next.data.items.map((i: { fields: unknown }) => i.fields), [text.data.fields])
})

t.test('a maintainer deleted between the check and the write answers the 422 of a create naming no such user, on a create and an update', async (t) => {
  const { client } = await ctx.newTenant()
  for (const kind of [propertyKind, addressKind]) {
    const existing = (await client.post(`/v1/${kind.path}`, {})).data
    for (const [write, path] of [['post', `/v1/${kind.path}`], ['patch', `/v1/${kind.path}/${existing.id}`]] as const) {
      const user = (await client.post('/v1/users', { name: 'Temp', email: `temp-${kind.path}-${write}@example.com` })).data
      // The deletion holds the user's row, uncommitted: the write's check still sees the user, and its foreign key waits for the deletion.
      const deletion = await holdRow(ctx.db, sql`delete from users where id = ${user.id}`)
      const writing = client[write](path, { maintainerUserId: user.id })
      await waitForLockWait(ctx.db)
      await deletion.release()
      const answer = await writing
      assertProblem(t, answer, 422, /The maintainer is not a user of this tenant/)
      t.match(answer.data.errors, [{ pointer: '/body/maintainerUserId' }])
    }
  }
})
