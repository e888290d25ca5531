// Postgres busy rather than gone: the app's pool full of requests waiting for a lock a test connection
// holds, a table locked. The app reaches its own test database directly (no proxy) with a pool of one
// connection and short timeouts, so each wait ends within a second; the shared server is never touched.
import t from 'tap'
import { buildApp, serverOptions } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { openPostgres } from '../../src/db/connect.js'
import { sql } from '../../src/db/kysely.js'
import { hashKey } from '../../src/lib/keys.js'
import { readinessCheck } from '../../src/modules/health/readiness.js'
import { client, setupApp } from '../helpers/app.js'
import { waitForLockWait } from '../helpers/database.js'

const ctx = await setupApp(t)
const tenant = await ctx.newTenant()
const user = (await tenant.client.post('/v1/users', { name: 'Anna', email: 'anna@example.com' })).data
for (const price of [1, 2, 3]) await tenant.client.post('/v1/properties', { fields: { price } })

const OPERATOR_KEY = 'contention-operator-key-of-enough-length'
const small = openPostgres(ctx.databaseUrl, { poolMax: 1, statementTimeoutMs: 1000, connectTimeoutMs: 500 })
const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0' })
const app = await buildApp({ config, db: small.db, operatorKeyHash: hashKey(OPERATOR_KEY), clock: ctx.clock }, serverOptions(config, false))
t.teardown(async () => {
  await app.close()
  await small.close()
})
const api = client(app, tenant.key)
await api.get('/v1/users') // the key is verified once, then remembered: later requests need no connection for it

const tick = () => new Promise((resolve) => setImmediate(resolve))

t.test('a list of records whose pool fills between its queries answers 503, not a 200 that breaks off', async (t) => {
  let listing: ReturnType<typeof api.get> | undefined
  let patching: ReturnType<typeof api.patch> | undefined
  await ctx.db.transaction().execute(async (trx) => {
    await sql`select id from users where id = ${user.id} for update`.execute(trx)
    await ctx.db.transaction().execute(async (table) => {
      // The list's first query waits for the table with the pool's one connection; a user's PATCH queues for it.
      await sql`lock table properties in access exclusive mode`.execute(table)
      listing = api.get('/v1/properties')
      await waitForLockWait(ctx.db)
      patching = api.patch(`/v1/users/${user.id}`, { name: 'Anna B' })
      for (let i = 0; i < 20; i++) await tick()
    })
    // The table is free: the list's first query ends, the PATCH takes the connection and waits for the user.
    await waitForLockWait(ctx.db)
    const list = await listing!
    t.equal(list.statusCode, 503, list.body.slice(0, 200))
    t.equal(list.headers['retry-after'], '2')
    t.match(list.headers['content-type'], /^application\/problem\+json/)
  })
  t.equal((await patching!).statusCode, 200, 'the PATCH went through once the user was free')
  const again = await api.get('/v1/properties')
  t.equal(again.statusCode, 200)
  t.equal(again.data.items.length, 3, 'and the list is whole again')
})

t.test('a request that finds the pool full waits DATABASE_CONNECT_TIMEOUT_MS for a connection, not the statement timeout, then answers 503', async (t) => {
  let listing: ReturnType<typeof api.get> | undefined
  await ctx.db.transaction().execute(async (table) => {
    // The list takes the pool's one connection and waits for the table; the next request waits for the connection.
    await sql`lock table properties in access exclusive mode`.execute(table)
    listing = api.get('/v1/properties')
    await waitForLockWait(ctx.db)
    const queuedAt = performance.now()
    const queued = await api.get('/v1/users')
    const waited = performance.now() - queuedAt
    t.equal(queued.statusCode, 503, queued.body.slice(0, 200))
    t.ok(waited >= 450 && waited < 1000, `gave up after ${Math.round(waited)} ms: the connect timeout's 500, before the statement timeout's 1000`)
  })
  t.ok([200, 503].includes((await listing!).statusCode), 'the list ends either way')
})

t.test('/health/ready says that every connection waits, not that the database is unreachable, while a lock holds the pool', async (t) => {
  // The pool's one connection waits for a table an operator locked; a second pool waits longer for its
  // connection than the check does (DATABASE_CONNECT_TIMEOUT_MS past 2 s, as by default).
  const patient = openPostgres(ctx.databaseUrl, { poolMax: 1, statementTimeoutMs: 5000, connectTimeoutMs: 4000 })
  t.teardown(() => patient.close())
  let listing: ReturnType<typeof api.get> | undefined
  let waiting: Promise<unknown> | undefined
  await ctx.db.transaction().execute(async (table) => {
    await sql`lock table properties in access exclusive mode`.execute(table)
    listing = api.get('/v1/properties')
    waiting = sql`select count(*) from properties`.execute(patient.db).catch(() => undefined)
    await waitForLockWait(ctx.db, 2)
    const ready = await client(app).get('/health/ready')
    t.equal(ready.statusCode, 503)
    t.match(ready.data.detail, /^All 1 database connections of this process are taken and none came free in time: .*lock/, ready.data.detail)
    const unready = await readinessCheck(patient.db)()
    t.match(unready?.detail, /^All 1 database connections of this process are taken/, 'also when the check gives up before the pool does')
  })
  await Promise.all([listing, waiting])
  t.equal((await client(app).get('/health/ready')).statusCode, 200, 'ready again once the lock is gone')
  t.equal(await readinessCheck(patient.db)(), undefined)
})
