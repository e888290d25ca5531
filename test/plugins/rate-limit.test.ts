import type { KyselyPlugin } from '../../src/db/kysely.js'
import t from 'tap'
import { buildApp, serverOptions } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { signClaim } from '../../src/lib/api-claims.js'
import { newId } from '../../src/lib/ids.js'
import { generateKey, hashKey } from '../../src/lib/keys.js'
import { loadClaimKey } from '../../src/modules/auth/claim-key.js'
import { setupApp } from '../helpers/app.js'
import { assertProblem } from '../helpers/assertions.js'
import { createTestDatabase } from '../helpers/database.js'
import { createService } from '../modules/marketplace/fixtures/catalogue.js'

t.test('each API key has its own budget of requests per window: 429 with Retry-After beyond', async (t) => {
  const ctx = await setupApp(t, { RATE_LIMIT_MAX: '5', RATE_LIMIT_WINDOW_MS: '60000' })
  const a = await ctx.newTenant()
  const b = await ctx.newTenant()
  for (let i = 0; i < 5; i++) t.equal((await a.client.get('/v1/users')).statusCode, 200)
  const limited = await a.client.get('/v1/users')
  assertProblem(t, limited, 429, /More than 5 requests in 60 s with this key/)
  t.ok(Number(limited.headers['retry-after']) > 0 && Number(limited.headers['retry-after']) <= 60, `Retry-After: ${limited.headers['retry-after']}`)
  assertProblem(t, await a.client.post('/v1/users', { name: 'x', email: 'x@example.com' }), 429)
  t.equal((await b.client.get('/v1/users')).statusCode, 200, 'another key is not affected')
  for (let i = 0; i < 5; i++) await ctx.anonymous.get('/v1/users')
  assertProblem(t, await ctx.anonymous.get('/v1/users'), 429, /More than 5 requests in 60 s without a key from this address/)
  // A load balancer's or kubelet's probes share an address with clients that send no key: a 429 would take the process out.
  for (let i = 0; i < 10; i++) {
    t.equal((await ctx.anonymous.get('/health/live')).statusCode, 200, `liveness ${i}: not limited`)
    t.equal((await ctx.anonymous.get('/health/ready')).statusCode, 200, `readiness ${i}: not limited`)
  }
})

t.test('guessing keys: past AUTH_FAILURE_LIMIT failures an address gets 429, with no database lookup per guess', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  let queries = 0
  const counting: KyselyPlugin = {
    transformQuery: (args) => { queries += 1; return args.node },
    transformResult: async (args) => args.result
  }
  const config = loadConfig({ LOG_LEVEL: 'silent', AUTH_FAILURE_LIMIT: '3', RATE_LIMIT_WINDOW_MS: '1500' })
  const operatorKey = generateKey('operator')
  const app = await buildApp({ config, db: database.db.withPlugin(counting), operatorKeyHash: hashKey(operatorKey) }, serverOptions(config, false))
  t.teardown(() => app.close())
  const call = async (key: string, remoteAddress = '203.0.113.7') => {
    const response = await app.inject({ method: 'GET', url: '/v1/users', headers: { authorization: `Bearer ${key}` }, remoteAddress })
    return Object.assign(response, { data: JSON.parse(response.body || 'null') })
  }
  const tenant = await app.inject({ method: 'POST', url: '/v1/tenants', headers: { authorization: `Bearer ${operatorKey}` }, payload: { name: 'T', webId: 'guess' } })
  const known = JSON.parse((await app.inject({
    method: 'POST', url: `/v1/tenants/${tenant.json().id}/api-keys`, headers: { authorization: `Bearer ${operatorKey}` }, payload: { name: 'k' }
  })).body).key
  const fresh = JSON.parse((await app.inject({
    method: 'POST', url: `/v1/tenants/${tenant.json().id}/api-keys`, headers: { authorization: `Bearer ${operatorKey}` }, payload: { name: 'k2' }
  })).body).key
  t.equal((await call(known)).statusCode, 200, 'a key that authenticates from the address')

  for (let i = 0; i < 3; i++) assertProblem(t, await call(`btk_guess${i}`), 401)
  const before = queries
  for (let i = 3; i < 20; i++) {
    const guess = await call(`btk_guess${i}`)
    assertProblem(t, guess, 429, /Too many failed authentications from this address/)
    t.ok(Number(guess.headers['retry-after']) >= 1)
  }
  t.equal(queries, before, '17 more guesses, no database lookup')
  t.equal((await call(known)).statusCode, 200, 'a key that authenticated lately still gets in')
  assertProblem(t, await call(fresh), 429, undefined)
  assertProblem(t, await call('btk_guess', '198.51.100.1'), 401, undefined)

  await new Promise((resolve) => setTimeout(resolve, 1600))
  assertProblem(t, await call('btk_after-the-window'), 401)
  t.equal((await call(fresh)).statusCode, 200, 'after the window every key is checked again')
})

// A key that worked lately passes the failure limit; revoked, it kept that pass for the rest of the
// window, each of its requests a database lookup past the limit.
t.test('a key revoked since it worked lately is held to the failure limit from its first refusal on', async (t) => {
  const ctx = await setupApp(t, { AUTH_FAILURE_LIMIT: '3', RATE_LIMIT_WINDOW_MS: '60000' })
  const tenant = await ctx.newTenant()
  t.equal((await tenant.client.get('/v1/users')).statusCode, 200, 'the key works')
  const keyId = ((await ctx.operator.get(`/v1/tenants/${tenant.id}/api-keys`)).data.items as { id: string }[])[0]!.id
  t.equal((await ctx.operator.delete(`/v1/tenants/${tenant.id}/api-keys/${keyId}`)).statusCode, 204, 'revoked')
  assertProblem(t, await tenant.client.get('/v1/users'), 401)
  for (let i = 0; i < 2; i++) assertProblem(t, await ctx.as(`btk_guess${i}`).get('/v1/users'), 401)
  assertProblem(t, await tenant.client.get('/v1/users'), 429, /Too many failed authentications/)
})

/** A tenant whose activated service may be sent a property's claims: `claim(expiresAt)` signs one as Baton does. */
async function claimFixture(ctx: Awaited<ReturnType<typeof setupApp>>) {
  const tenant = await ctx.newTenant()
  const service = await createService(ctx.operator)
  await tenant.client.put(`/v1/marketplace-services/${service.id}/activation`)
  const property = (await tenant.client.post('/v1/properties', { fields: { price: 1 } })).data
  const key = await loadClaimKey(ctx.db, undefined)
  const now = Math.floor(ctx.clock.now().getTime() / 1000)
  const claim = (expiresAt = now + 900) => signClaim({
    tenantId: tenant.id, serviceId: service.id, deliveryId: newId(), propertyId: property.id, addressId: null, expiresAt
  }, key)
  return { tenant, property, claim, now }
}

t.test('a provider\'s expired apiClaims do not lock out the fresh ones its next calls bring', async (t) => {
  // A provider that answers at once and works afterwards (as "For providers" asks) may write back late:
  // its expired claims answer 401, but they are Baton's own, refused by their signature without a lookup.
  const ctx = await setupApp(t, { AUTH_FAILURE_LIMIT: '3', RATE_LIMIT_WINDOW_MS: '60000' })
  const { property, claim, now } = await claimFixture(ctx)
  for (let i = 0; i < 5; i++) {
    assertProblem(t, await ctx.as(claim(now - 60)).patch(`/v1/properties/${property.id}`, { fields: { marketValue: i } }), 401, /expired/)
  }
  const fresh = await ctx.as(claim(now + 900)).patch(`/v1/properties/${property.id}`, { fields: { marketValue: 5 } })
  t.equal(fresh.statusCode, 200, fresh.body)
  assertProblem(t, await ctx.as(`bcl_${'x'.repeat(40)}.forged`).get(`/v1/properties/${property.id}`), 401, /not valid/)
  for (let i = 0; i < 3; i++) assertProblem(t, await ctx.as(`btk_guess${i}`).get('/v1/users'), 401)
  assertProblem(t, await ctx.as('btk_guess').get('/v1/users'), 429, /Too many failed authentications/)
})

// A forged apiClaim (one Baton did not sign) counted against a budget of its own hash, and claims are
// let past the failure limit: a client without a key got a fresh budget per request, and 10,000 forged
// claims pushed every key's counter out of the store, its own spent one included.
t.test('forged apiClaims count against their address, as requests without a key do; a genuine one against itself', async (t) => {
  const ctx = await setupApp(t, { RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW_MS: '60000' })
  const fixture = await claimFixture(ctx)
  const { property } = fixture
  const forged = (i: number) => ctx.as(`bcl_${Buffer.from(`forged ${i}`).toString('base64url')}.${'x'.repeat(43)}`)
  for (let i = 0; i < 3; i++) assertProblem(t, await forged(i).get(`/v1/properties/${property.id}`), 401, /not valid/)
  for (let i = 3; i < 6; i++) {
    assertProblem(t, await forged(i).get(`/v1/properties/${property.id}`), 429, /More than 3 requests in 60 s without a key from this address/)
  }
  assertProblem(t, await ctx.anonymous.get('/v1/users'), 429, /without a key from this address/)
  const claim = fixture.claim()
  for (let i = 0; i < 3; i++) t.equal((await ctx.as(claim).get(`/v1/properties/${property.id}`)).statusCode, 200, `genuine claim ${i}: a budget of its own`)
  assertProblem(t, await ctx.as(claim).get(`/v1/properties/${property.id}`), 429, /with this key/)
})

t.test('a claim before the claim key is loaded counts against its address: the limit waits for no database', async (t) => {
  const ctx = await setupApp(t, { RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW_MS: '60000' })
  const fixture = await claimFixture(ctx)
  const { property } = fixture
  const claim = fixture.claim()
  t.equal((await ctx.as(claim).get(`/v1/properties/${property.id}`)).statusCode, 200, 'the first claim: its authentication loads the key')
  for (let i = 0; i < 2; i++) t.equal((await ctx.anonymous.get('/v1/users')).statusCode, 401)
  assertProblem(t, await ctx.anonymous.get('/v1/users'), 429, /without a key from this address/)
  for (let i = 0; i < 3; i++) t.equal((await ctx.as(claim).get(`/v1/properties/${property.id}`)).statusCode, 200, `claim ${i}: a budget of its own`)
})

// Each key has a counter in a store of 10,000, the ones used longest ago dropped first; the failure
// limit was checked after the guess had been counted, so each refused guess still took a counter of
// its own, and 10,000 guesses from one address dropped a spent budget: the key was let in again.
t.test('guesses past the failure limit take no counter: they cannot push a spent budget out of the store', async (t) => {
  const ctx = await setupApp(t, { RATE_LIMIT_MAX: '3', AUTH_FAILURE_LIMIT: '3', RATE_LIMIT_WINDOW_MS: '60000' })
  const tenant = await ctx.newTenant()
  for (let i = 0; i < 3; i++) t.equal((await tenant.client.get('/v1/users')).statusCode, 200)
  assertProblem(t, await tenant.client.get('/v1/users'), 429, /with this key/)
  const guess = (i: number) => ctx.app.inject({ method: 'GET', url: '/v1/users', headers: { authorization: `Bearer btk_guess${i}` } })
  const statuses = new Map<number, number>()
  for (let i = 0; i < 10_010; i++) {
    const { statusCode } = await guess(i)
    statuses.set(statusCode, (statuses.get(statusCode) ?? 0) + 1)
  }
  t.same(Object.fromEntries(statuses), { 401: 3, 429: 10_007 }, 'three guesses checked, the rest refused unchecked')
  assertProblem(t, await tenant.client.get('/v1/users'), 429, /More than 3 requests in 60 s with this key/)
})

t.test('limits of 0 are off', async (t) => {
  const ctx = await setupApp(t, { RATE_LIMIT_MAX: '0', AUTH_FAILURE_LIMIT: '0' })
  const a = await ctx.newTenant()
  for (let i = 0; i < 40; i++) t.equal((await ctx.as(`btk_guess${i}`).get('/v1/users')).statusCode, 401)
  t.equal((await a.client.get('/v1/users')).statusCode, 200)
})

// BATON_TRUST_PROXY=true trusted every X-Forwarded-For hop, so request.ip was the leftmost entry,
// which the client writes itself: a fresh forged entry per guess escaped the failure limit, and one
// naming another client's address locked that client out. The proxy appends the address it saw.
t.test('behind a proxy the limits count the address the proxy saw, not one the client forged', async (t) => {
  const ctx = await setupApp(t, { AUTH_FAILURE_LIMIT: '3', RATE_LIMIT_WINDOW_MS: '60000', BATON_TRUST_PROXY: 'true' })
  const tenant = await ctx.newTenant()
  const via = async (key: string, forwardedFor: string) => withData(await ctx.app.inject({
    method: 'GET', url: '/v1/users', remoteAddress: '10.0.0.1', headers: { authorization: `Bearer ${key}`, 'x-forwarded-for': forwardedFor }
  }))
  for (let i = 0; i < 3; i++) assertProblem(t, await via(`btk_guess${i}`, `198.18.0.${i}, 203.0.113.50`), 401)
  assertProblem(t, await via('btk_guess', '198.18.0.9, 203.0.113.50'), 429, /Too many failed authentications/)  // a forged first entry is no new address
  assertProblem(t, await via('btk_guess', '203.0.113.50, 198.51.100.4'), 401)  // nor does it lock out the address it names
  const unseen = (await ctx.operator.post(`/v1/tenants/${tenant.id}/api-keys`, { name: 'unseen' })).data.key as string
  t.equal((await via(unseen, '203.0.113.50, 198.51.100.4')).statusCode, 200, 'the client at the forged address gets in')
})

// Behind two proxies (a CDN, then a load balancer), each appends the address it saw: the client is the
// address the outer one saw, the second entry from the end; the inner proxy's own address was the one
// client every request counted as.
t.test('behind two proxies (BATON_TRUST_PROXY=2) the limits count the address the outer proxy saw, not one the client forged nor the inner proxy', async (t) => {
  const ctx = await setupApp(t, { AUTH_FAILURE_LIMIT: '3', RATE_LIMIT_WINDOW_MS: '60000', BATON_TRUST_PROXY: '2' })
  const tenant = await ctx.newTenant()
  const via = async (key: string, forwardedFor: string) => withData(await ctx.app.inject({
    method: 'GET', url: '/v1/users', remoteAddress: '10.0.0.2', headers: { authorization: `Bearer ${key}`, 'x-forwarded-for': forwardedFor }
  }))
  for (let i = 0; i < 3; i++) assertProblem(t, await via(`btk_guess${i}`, `198.18.0.${i}, 203.0.113.50, 10.0.0.1`), 401)
  assertProblem(t, await via('btk_guess', '198.18.0.9, 203.0.113.50, 10.0.0.1'), 429, /Too many failed authentications/)  // a forged first entry is no new address
  const unseen = (await ctx.operator.post(`/v1/tenants/${tenant.id}/api-keys`, { name: 'unseen' })).data.key as string
  t.equal((await via(unseen, '203.0.113.51, 10.0.0.1')).statusCode, 200, 'another client behind the same two proxies gets in')
  t.equal((await via(unseen, '203.0.113.50, 10.0.0.1')).statusCode, 200, 'and so does the limited one with a key that authenticates')
  assertProblem(t, await via('btk_guess', '203.0.113.50, 10.0.0.1'), 429, /Too many failed authentications/)
})

// The failure limit counted each IPv6 address apart: a host has a /64 to itself, so a new address per
// guess was a new budget. IPv6 clients count by their /64, IPv4-mapped ones as the IPv4 address.
t.test('an IPv6 client counts by its /64, not by each of its addresses', async (t) => {
  const ctx = await setupApp(t, { AUTH_FAILURE_LIMIT: '3', RATE_LIMIT_WINDOW_MS: '60000' })
  const guess = async (key: string, remoteAddress: string) =>
    withData(await ctx.app.inject({ method: 'GET', url: '/v1/users', remoteAddress, headers: { authorization: `Bearer ${key}` } }))
  for (let i = 0; i < 3; i++) assertProblem(t, await guess(`btk_guess${i}`, `2001:db8:1:2::${i + 1}`), 401)
  assertProblem(t, await guess('btk_guess', '2001:db8:1:2:ffff::9'), 429, /Too many failed authentications/)
  assertProblem(t, await guess('btk_guess', '2001:db8:1:3::1'), 401)  // the next /64 is another client
  for (let i = 0; i < 3; i++) assertProblem(t, await guess(`btk_guess${i}`, '198.51.100.20'), 401)
  assertProblem(t, await guess('btk_guess', '::ffff:198.51.100.20'), 429, /Too many failed authentications/)  // an IPv4-mapped address is its IPv4 address
})

t.test('a key\'s budget and an address\'s failures end after their window also when the clock was stepped back meanwhile', async (t) => {
  const wallNow = Date.now
  t.teardown(() => { Date.now = wallNow })
  const ctx = await setupApp(t, { RATE_LIMIT_MAX: '2', AUTH_FAILURE_LIMIT: '3', RATE_LIMIT_WINDOW_MS: '1000' })
  const tenant = await ctx.newTenant()
  for (let i = 0; i < 2; i++) t.equal((await tenant.client.get('/v1/users')).statusCode, 200)
  assertProblem(t, await tenant.client.get('/v1/users'), 429, /More than 2 requests in 1 s with this key/)
  for (let i = 0; i < 3; i++) assertProblem(t, await ctx.as(`btk_guess${i}`).get('/v1/users'), 401)
  assertProblem(t, await ctx.as('btk_guess').get('/v1/users'), 429, /Too many failed authentications/)
  // The machine's clock is stepped back a minute within the window.
  Date.now = () => wallNow() - 60_000
  await new Promise((resolve) => setTimeout(resolve, 1100))
  t.equal((await tenant.client.get('/v1/users')).statusCode, 200, 'the key has its budget again after the window, not after the minute')
  assertProblem(t, await ctx.as('btk_after-the-window').get('/v1/users'), 401)  // checked again, not 429
})

t.test('a key that worked lately still gets in past the failure limit when the clock is stepped forward', async (t) => {
  const wallNow = Date.now
  t.teardown(() => { Date.now = wallNow })
  const ctx = await setupApp(t, { AUTH_FAILURE_LIMIT: '3', RATE_LIMIT_WINDOW_MS: '60000' })
  const tenant = await ctx.newTenant()
  t.equal((await tenant.client.get('/v1/users')).statusCode, 200, 'the key works')
  for (let i = 0; i < 3; i++) assertProblem(t, await ctx.as(`btk_guess${i}`).get('/v1/users'), 401)
  assertProblem(t, await ctx.as('btk_guess').get('/v1/users'), 429, /Too many failed authentications/)
  // The machine's clock is stepped forward past the window; the address's failures are still counted.
  Date.now = () => wallNow() + 61_000
  assertProblem(t, await ctx.as('btk_guess').get('/v1/users'), 429, /Too many failed authentications/)
  t.equal((await tenant.client.get('/v1/users')).statusCode, 200, 'the key that worked a moment ago still gets in')
})

function withData<R extends { body: string }>(response: R): R & { data: unknown } {
  return Object.assign(response, { data: JSON.parse(response.body || 'null') as unknown })
}
