import t from 'tap'
import { KnownKeys } from '../../../src/modules/auth/known-keys.js'

t.test('a verified key is known for the ttl, then looked up again', async (t) => {
  let now = 1000
  const keys = new KnownKeys(2000, 10, () => now)
  keys.remember('h1', 'tenant-a', keys.startLookup())
  t.equal(keys.tenantOf('h1'), 'tenant-a')
  now += 1999
  t.equal(keys.tenantOf('h1'), 'tenant-a')
  now += 1
  t.equal(keys.tenantOf('h1'), undefined, 'expired')
})

t.test('forgetting a tenant forgets its keys, and a lookup that began before is not remembered', async (t) => {
  const keys = new KnownKeys(2000, 10)
  keys.remember('a1', 'tenant-a', keys.startLookup())
  keys.remember('b1', 'tenant-b', keys.startLookup())
  const before = keys.startLookup()
  keys.forgetTenant('tenant-a')
  t.equal(keys.tenantOf('a1'), undefined)
  t.equal(keys.tenantOf('b1'), 'tenant-b', 'other tenants keep theirs')
  keys.remember('a1', 'tenant-a', before)
  t.equal(keys.tenantOf('a1'), undefined, 'it may have read the key before its revocation')
})

t.test('at most `max` keys are kept, the oldest forgotten first; a ttl of 0 keeps none', async (t) => {
  const keys = new KnownKeys(2000, 2)
  for (const hash of ['k1', 'k2', 'k3']) keys.remember(hash, 'tenant', keys.startLookup())
  t.equal(keys.tenantOf('k1'), undefined)
  t.equal(keys.tenantOf('k3'), 'tenant')
  const off = new KnownKeys(0)
  off.remember('k', 'tenant', off.startLookup())
  t.equal(off.tenantOf('k'), undefined)
})

t.test('a key is remembered for the ttl from when its lookup began, so a slow lookup does not stretch a revocation elsewhere', async (t) => {
  let now = 1000
  const keys = new KnownKeys(2000, 10, () => now)
  const lookup = keys.startLookup()
  now += 1500 // the lookup waited for a connection, or for a busy event loop
  keys.remember('h1', 'tenant-a', lookup)
  t.equal(keys.tenantOf('h1'), 'tenant-a')
  now += 499
  t.equal(keys.tenantOf('h1'), 'tenant-a')
  now += 1
  t.equal(keys.tenantOf('h1'), undefined, '2 s after the read began, the key is looked up again')
})

t.test('a clock stepped back does not stretch the ttl: the key is looked up again', async (t) => {
  let now = 100_000
  const keys = new KnownKeys(2000, 10, () => now)
  keys.remember('h1', 'tenant-a', keys.startLookup())
  now -= 60_000 // the machine's clock was stepped back a minute
  t.equal(keys.tenantOf('h1'), undefined, 'a key revoked through another API process no longer works here for a minute')
})
