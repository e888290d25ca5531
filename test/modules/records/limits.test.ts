import t from 'tap'
import { signClaim } from '../../../src/lib/api-claims.js'
import { newId } from '../../../src/lib/ids.js'
import { loadClaimKey } from '../../../src/modules/auth/claim-key.js'
import { FIELDS_MAX_BYTES, FIELDS_MAX_DEPTH } from '../../../src/modules/records/limits.js'
import { BODY_MAX_DEPTH } from '../../../src/plugins/json-body.js'
import { setupApp, type Client } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { createService } from '../marketplace/fixtures/catalogue.js'

const ctx = await setupApp(t)
const tenant = await ctx.newTenant()

/** Fields whose key `a` nests `levels` objects deep, the fields object being the first. */
function nested(levels: number): Record<string, unknown> {
  let value: Record<string, unknown> = {}
  for (let i = 1; i < levels; i++) value = { a: value }
  return value
}

/** A body `{"fields": nested(levels)}` as text: too deep for JSON.stringify, as an attacker would send it. */
function deepBody(levels: number, key = 'fields'): string {
  return `{"${key}":${'{"a":'.repeat(levels - 1)}{}${'}'.repeat(levels - 1)}}`
}
const JSON_TYPE = { 'content-type': 'application/json' }

/** The pointer of the object one level too deep in `nested(levels)`. */
const tooDeepPointer = `/body/fields${'/a'.repeat(FIELDS_MAX_DEPTH)}`

/** Fields that take exactly `bytes` bytes as compact JSON. */
function ofBytes(bytes: number): Record<string, string> {
  return { blob: 'x'.repeat(bytes - '{"blob":""}'.length) }
}

for (const path of ['properties', 'addresses']) {
  t.test(`${path}: fields at most ${FIELDS_MAX_DEPTH} levels deep; deeper, even 4,500 levels, is 422 with a pointer`, async (t) => {
    const client = tenant.client
    const atLimit = await client.post(`/v1/${path}`, { fields: nested(FIELDS_MAX_DEPTH) })
    t.equal(atLimit.statusCode, 201, atLimit.body)
    // Up to a body nested BODY_MAX_DEPTH levels the records' own limit answers; deeper, the body's, before validation.
    for (const levels of [FIELDS_MAX_DEPTH + 1, BODY_MAX_DEPTH - 1]) {
      const created = await client.post(`/v1/${path}`, deepBody(levels), JSON_TYPE)
      assertProblem(t, created, 422, /at most 32 levels/)
      t.equal(created.data.errors[0].pointer, tooDeepPointer, `${levels} levels: the pointer names the first object too deep`)
      assertProblem(t, await client.patch(`/v1/${path}/${atLimit.data.id}`, deepBody(levels), JSON_TYPE), 422, /at most 32 levels/)
    }
    for (const levels of [BODY_MAX_DEPTH, 4500, 20_000]) {
      const created = await client.post(`/v1/${path}`, deepBody(levels), JSON_TYPE)
      assertProblem(t, created, 422, /deeper than 100 levels/)
      t.equal(created.data.errors[0].pointer, `/body/fields${'/a'.repeat(BODY_MAX_DEPTH - 1)}`, `${levels} levels: the pointer names the first object past the body's bound`)
      assertProblem(t, await client.patch(`/v1/${path}/${atLimit.data.id}`, deepBody(levels), JSON_TYPE), 422, /deeper than 100 levels/)
    }
    const deepInArray = await client.post(`/v1/${path}`, { fields: { list: [[[nested(FIELDS_MAX_DEPTH)]]] } })
    assertProblem(t, deepInArray, 422)
    t.match(deepInArray.data.errors[0].pointer, /^\/body\/fields\/list\/0\/0\/0(\/a)+$/, 'arrays count as levels and show as indexes')
    t.equal((await client.get(`/v1/${path}/${atLimit.data.id}`)).data.version, 1, 'the refused patches changed nothing')
  })

  t.test(`${path}: fields at most 256 KiB as JSON, also after a merge`, async (t) => {
    const client = tenant.client
    const full = await client.post(`/v1/${path}`, { fields: ofBytes(FIELDS_MAX_BYTES) })
    t.equal(full.statusCode, 201, 'exactly the limit is stored')
    const over = await client.post(`/v1/${path}`, { fields: ofBytes(FIELDS_MAX_BYTES + 1) })
    assertProblem(t, over, 422, /at most 262144 bytes/)
    t.same(over.data.errors, [{ pointer: '/body/fields', detail: `${FIELDS_MAX_BYTES + 1} bytes as JSON, more than ${FIELDS_MAX_BYTES}` }])

    const grown = await client.patch(`/v1/${path}/${full.data.id}`, { fields: { more: 'y' } })
    assertProblem(t, grown, 422, /these would take/)
    const after = await client.get(`/v1/${path}/${full.data.id}`)
    t.match(after.data, { version: 1, fields: { blob: String } }, 'a merge past the limit is rolled back')
    t.notOk('more' in after.data.fields)
    const shrunk = await client.patch(`/v1/${path}/${full.data.id}`, { fields: { blob: null, more: 'y' } })
    t.equal(shrunk.statusCode, 200, 'a merge that stays within the limit is stored')
  })
}

t.test('a provider writing back with an apiClaim meets the same limits', async (t) => {
  const service = await createService(ctx.operator)
  await tenant.client.put(`/v1/marketplace-services/${service.id}/activation`)
  const property = await tenant.client.post('/v1/properties', { fields: { price: 1 } })
  const claim = signClaim({
    tenantId: tenant.id, serviceId: service.id, deliveryId: newId(), propertyId: property.data.id, addressId: null,
    expiresAt: Math.floor(ctx.clock.now().getTime() / 1000) + 600
  }, await loadClaimKey(ctx.db, undefined))
  const provider: Client = ctx.as(claim)
  assertProblem(t, await provider.patch(`/v1/properties/${property.data.id}`, deepBody(FIELDS_MAX_DEPTH + 1), JSON_TYPE), 422, /at most 32 levels/)
  assertProblem(t, await provider.patch(`/v1/properties/${property.data.id}`, deepBody(4500), JSON_TYPE), 422, /deeper than 100 levels/)
  assertProblem(t, await provider.patch(`/v1/properties/${property.data.id}`, { fields: ofBytes(FIELDS_MAX_BYTES + 1) }), 422)
  const ok = await provider.patch(`/v1/properties/${property.data.id}`, { fields: { marketValue: 2 } })
  t.equal(ok.statusCode, 200, ok.body)
})

t.test('the fields filter of a list is held to the same depth', async (t) => {
  const filter = encodeURIComponent(JSON.stringify(nested(FIELDS_MAX_DEPTH + 1)))
  assertProblem(t, await tenant.client.get(`/v1/properties?fields=${filter}`), 400, /at most 32 levels/)
  t.equal((await tenant.client.get(`/v1/properties?fields=${encodeURIComponent('{"price":1}')}`)).statusCode, 200)
})

t.test('a number in the fields filter too large for a double is refused, not looked for as null', async (t) => {
  for (const filter of ['{"a":1e400}', '{"a":{"b":-1e400}}']) {
    const refused = await tenant.client.get(`/v1/properties?fields=${encodeURIComponent(filter)}`)
    assertProblem(t, refused, 400, /number too large/)
  }
  t.match((await tenant.client.get(`/v1/properties?fields=${encodeURIComponent('{"a":{"b":-1e400}}')}`)).data.errors, [{ pointer: '/querystring/fields/a/b' }])
})

t.test('half of a surrogate pair alone in the fields filter is refused naming where, not with a 400 naming nothing', async (t) => {
  const refused = await tenant.client.get(`/v1/properties?fields=${encodeURIComponent('{"a":{"b":"x\\ud800"}}')}`)
  assertProblem(t, refused, 400, /half of a surrogate pair alone/)
  t.same(refused.data.errors, [{ pointer: '/querystring/fields/a/b', detail: 'holds a lone surrogate (\\uD800–\\uDFFF without its pair)' }])
  t.equal((await tenant.client.get(`/v1/properties?fields=${encodeURIComponent('{"a":"\\ud83d\\ude00"}')}`)).statusCode, 200, 'a whole pair is text')
})

t.test('a NUL character escaped in the fields filter is refused naming where, not with a 400 from Postgres naming nothing', async (t) => {
  const cases: [string, string, string][] = [
    ['{"a":{"b":"x\\u0000"}}', '/querystring/fields/a/b', 'must not contain the NUL character (U+0000)'],
    ['{"a":{"b\\u0000":1}}', '/querystring/fields/a', 'a property name must not contain the NUL character (U+0000)'],
    ['{"list":["ok","\\u0000"]}', '/querystring/fields/list/1', 'must not contain the NUL character (U+0000)']
  ]
  for (const [filter, pointer, detail] of cases) {
    const refused = await tenant.client.get(`/v1/properties?fields=${encodeURIComponent(filter)}`)
    assertProblem(t, refused, 400, /NUL/)
    t.same(refused.data.errors, [{ pointer, detail }], filter)
  }
})
