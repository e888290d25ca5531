import t from 'tap'
import { buildApp, serverOptions } from '../../../src/app.js'
import { loadConfig } from '../../../src/config.js'
import { resolveOperatorKey, rotateOperatorKey } from '../../../src/modules/auth/operator-key.js'
import { OperatorKeyHash } from '../../../src/modules/auth/operator-key-hash.js'
import { TestClock } from '../../helpers/clock.js'
import { createTestDatabase } from '../../helpers/database.js'

t.test('a rotated operator key takes effect in a running API within two seconds, without a restart', async (t) => {
  const database = await createTestDatabase()
  const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0' })
  const first = await resolveOperatorKey(database.db, undefined)
  const clock = new TestClock()
  const app = await buildApp({ config, db: database.db, operatorKeyHash: first.hash, operatorKeyStored: true, clock }, serverOptions(config, false))
  t.teardown(async () => {
    await app.close()
    await database.drop()
  })
  const tenants = (key: string) => app.inject({ method: 'GET', url: '/v1/tenants', headers: { authorization: `Bearer ${key}` } }).then((r) => r.statusCode)

  t.equal(await tenants(first.generated!), 200)
  const second = await rotateOperatorKey(database.db)
  clock.advance(1999)
  t.equal(await tenants(first.generated!), 200, 'the copy read a moment ago is still used')
  clock.advance(1)
  t.equal(await tenants(first.generated!), 401, 'the old key stops working')
  t.equal(await tenants(second), 200, 'the new one works')
})

t.test('a key from BATON_ADMIN_TOKEN is fixed; a stored key is read again once, however many ask', async (t) => {
  let now = 0
  let reads = 0
  const fixed = new OperatorKeyHash('aa', undefined, () => now)
  now += 10_000
  t.equal(fixed.current(), 'aa')

  const stored = 'bb'
  const key = new OperatorKeyHash('aa', async () => (reads++, stored), () => now, 2000)
  t.equal(key.current(), 'aa')
  now += 2000
  const [a, b] = [key.current(), key.current()]
  t.same(await Promise.all([a, b]), ['bb', 'bb'])
  t.equal(reads, 1)
  t.equal(key.current(), 'bb', 'fresh again')

  let attempts = 0
  const failing = new OperatorKeyHash('aa', async () => {
    if (++attempts === 1) throw new Error('database away')
    return 'cc'
  }, () => now, 2000)
  now += 2000
  await t.rejects(Promise.resolve(failing.current()), /database away/, 'a failed read fails the request')
  t.equal(await failing.current(), 'cc', 'and the next one reads again')
})
