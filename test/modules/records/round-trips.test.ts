// A record write's round trips, watched through the fault proxy: with the database some milliseconds
// away (another zone, a VPN), each one is that much of the request. The services whose triggers watch
// the write and the templates it autostarts are read together, in one round trip after the write.
import t from 'tap'
import { buildApp, serverOptions } from '../../../src/app.js'
import { loadConfig } from '../../../src/config.js'
import { openPostgres } from '../../../src/db/connect.js'
import { hashKey } from '../../../src/lib/keys.js'
import { startFaultProxy } from '../../../scripts/drills/fault-proxy.js'
import { client, setupApp } from '../../helpers/app.js'

const ctx = await setupApp(t)
const proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(ctx.databaseUrl).port || 5432) })
// One connection, kept: what the first write prepares on it is prepared for the watched one.
const proxied = openPostgres(proxy.url(ctx.databaseUrl), { poolMax: 1, idleTimeoutMs: 0 })
const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0' })
const app = await buildApp({ config, db: proxied.db, operatorKeyHash: hashKey(ctx.operatorKey), clock: ctx.clock }, serverOptions(config, false))
t.teardown(async () => {
  await app.close()
  await proxied.close()
  await proxy.close()
})
const tenant = await ctx.newTenant()
const api = client(app, tenant.key)

/** The statements `action` runs, as `roundTrip: first words` lines, round trips counted from 1. */
async function roundTrips(action: () => Promise<unknown>): Promise<string[]> {
  const stop = proxy.record()
  let sent: { text: string; roundTrip: number }[] = []
  try {
    await action()
  } finally {
    sent = stop()
  }
  const first = sent[0]?.roundTrip ?? 0
  return sent.map(({ text, roundTrip }) => `${roundTrip - first + 1}: ${text.replace(/\s+/g, ' ').trim().slice(0, 30)}`)
}

t.test('a PATCH of a record: the write with BEGIN, the reads of its triggers and autostarts together, then COMMIT', async (t) => {
  const created = await api.post('/v1/properties', { fields: { price: 1 } })
  t.equal(created.statusCode, 201, created.body)
  // The first PATCH prepares the statements on the connection (which runs them one at a time).
  t.equal((await api.patch(`/v1/properties/${created.data.id}`, { fields: { price: 2 } })).statusCode, 200)
  let answer: Awaited<ReturnType<typeof api.patch>> | undefined
  const trips = await roundTrips(async () => {
    answer = await api.patch(`/v1/properties/${created.data.id}`, { fields: { price: 3 } })
  })
  t.equal(answer?.statusCode, 200, String(answer?.body))
  t.same(trips, [
    '1: begin',
    '1: update "properties" as r set f',
    '2: select s.id, s.name, coalesce(',
    '2: select tenant_id, id, name, au',
    '3: commit'
  ])
})

t.test('a create of a record: the same reads share a round trip', async (t) => {
  t.equal((await api.post('/v1/addresses', { fields: { city: 'Kiel' } })).statusCode, 201)
  let answer: Awaited<ReturnType<typeof api.post>> | undefined
  const trips = await roundTrips(async () => {
    answer = await api.post('/v1/addresses', { fields: { city: 'Lübeck' } })
  })
  t.equal(answer?.statusCode, 201, String(answer?.body))
  t.same(trips, [
    '1: begin',
    '1: insert into "addresses" ("tena',
    '2: select s.id, s.name, coalesce(',
    '2: select tenant_id, id, name, au',
    '3: commit'
  ])
})
