import t from 'tap'
import { buildApp, serverOptions } from '../../../src/app.js'
import { loadConfig } from '../../../src/config.js'
import { resolveOperatorKey, rotateOperatorKey } from '../../../src/modules/auth/operator-key.js'
import { OperatorKeyHash } from '../../../src/modules/auth/operator-key-hash.js'
import { hashKey } from '../../../src/lib/keys.js'
import { TestClock } from '../../helpers/clock.js'
import { createTestDatabase, databaseUrl } from '../../helpers/database.js'
import { runScript } from '../../helpers/process.js'
import { findOperatorKeyHash } from '../../../src/modules/auth/repository.js'

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

t.test('only a key with the generated prefix waits for a read of the stored hash; a clock set back reads again', async (t) => {
  let now = 10_000
  let reads = 0
  const key = new OperatorKeyHash(hashKey('bop_old'), () => (reads++, new Promise<string>(() => {})), () => now, 2000)
  now += 2000
  t.equal(key.matches('btk_tenant', hashKey('btk_tenant')), false, 'a tenant key is answered at once, the read not even begun')
  t.equal(reads, 0)
  t.type(key.matches('bop_old', hashKey('bop_old')), Promise, 'an operator key waits for it')
  t.equal(reads, 1)

  const fixed = new OperatorKeyHash(hashKey('any-token'), undefined, () => now)
  t.equal(fixed.matches('any-token', hashKey('any-token')), true, 'BATON_ADMIN_TOKEN may be any visible text')

  let later = 50_000
  let stored = 'aa'
  const stepped = new OperatorKeyHash('aa', async () => stored, () => later, 2000)
  later -= 60_000
  stored = 'bb'
  t.equal(await stepped.current(), 'bb', 'a clock set back does not keep the copy fresh')
})

// Processes given BATON_ADMIN_TOKEN use it and never read the stored key: a rotation printed a new key that no
// process took, and said that the old one, still the only one that works, had stopped working.
t.test('admin:rotate-key with a BATON_ADMIN_TOKEN of its own stops with a message; with the generated key exported, it rotates', async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const rotate = (token: string) => runScript('scripts/rotate-operator-key.ts', { DATABASE_URL: databaseUrl(database.name), BATON_ADMIN_TOKEN: token })
  const own = rotate(`bop_${'y'.repeat(40)}`)
  t.equal(await own.exited, 1)
  t.match(own.output(), /^BATON_ADMIN_TOKEN is set to a key of its own: /)
  t.notMatch(own.output(), /New operator key|\n\s+at /)
  t.equal(await findOperatorKeyHash(database.db), undefined, 'no key was stored')

  // As the first start's message tells: `export BATON_ADMIN_TOKEN=<the generated key>`, then rotate it.
  const generated = (await resolveOperatorKey(database.db, undefined)).generated!
  const exported = rotate(generated)
  t.equal(await exported.exited, 0, exported.output())
  const [, next] = /export BATON_ADMIN_TOKEN=(\S+)/.exec(exported.output()) ?? []
  t.equal(await findOperatorKeyHash(database.db), hashKey(next!), 'the new key is stored')
  t.match(exported.output(), /Processes started with BATON_ADMIN_TOKEN set use the old key until they are restarted/)

  // A shell that still exports the key rotated away: said so, not taken for a key of its own.
  const stale = rotate(generated)
  t.equal(await stale.exited, 1)
  t.match(stale.output(), /^BATON_ADMIN_TOKEN holds a generated operator key that is not the current one \(rotated since\?\)/)
  t.equal(await findOperatorKeyHash(database.db), hashKey(next!), 'the key stays')
})
