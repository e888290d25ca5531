// Faults of the machine Baton itself runs on: a process past its open-files limit (EMFILE). Such a
// worker wrote each webhook call it tried as the provider's failed attempt ("connect EMFILE"), so a long
// enough shortage failed the steps; it took the database's connect error for a fault of its own and
// left calls whose outcome it could not write to their leases; and an API process died of it (its load
// shedding read the process's memory from a timer). The tests lower this process's own limit for a moment.
import pg from 'pg'
import t from 'tap'
import { createHttpClient, LocalShortageError } from '../../src/adapters/http-client.js'
import { sql } from '../../src/db/kysely.js'
import { isDatabaseUnavailable, unavailableReason } from '../../src/db/errors.js'
import type { Logger } from '../../src/lib/logger.js'
import { databaseUrl } from '../helpers/database.js'
import { fdLimit, fdLimitMissing } from '../helpers/fd-limit.js'
import { setupRuntime } from '../helpers/runtime.js'
import { setupApp } from '../helpers/app.js'

const missing = fdLimitMissing()
if (missing) {
  t.test('faults of this machine\'s open-files limit', { skip: missing }, () => {})
} else {
  const limit = fdLimit()
  t.teardown(() => limit.close())

  /** Runs `work` with no file descriptor to spare, and gives the limit back whatever it did. */
  async function short<T>(work: () => Promise<T>): Promise<T> {
    await limit.exhaust()
    try {
      return await work()
    } finally {
      await limit.restore()
    }
  }

  t.test('a call that cannot open its socket fails as a shortage of this machine, not as the target\'s', async (t) => {
    const http = createHttpClient({ maxBodyBytes: 1024, maxSockets: 4, userAgent: 'Baton/test', allowPrivateNetworks: true })
    t.teardown(() => http.close())
    const error = await short(() => http.send({ method: 'GET', url: 'http://127.0.0.1:9/', headers: {}, timeoutMs: 2000 }).then(() => undefined, (e: unknown) => e))
    t.ok(error instanceof LocalShortageError, `a LocalShortageError: ${String(error)}`)
    t.match(error, { code: 'EMFILE', shortOf: /open-files limit, ulimit -n/ })
  })

  t.test('a database connection that cannot be opened for want of descriptors is the database away: 503, a backoff', async (t) => {
    const client = new pg.Client({ connectionString: databaseUrl('postgres') })
    const error = await short(() => client.connect().then(() => undefined, (e: unknown) => e))
    await client.end().catch(() => {})
    t.match(error, { code: 'EMFILE', syscall: 'connect' })
    t.ok(isDatabaseUnavailable(error), 'unavailable, as an outage')
    t.equal(unavailableReason(error), 'this process reached its open-files limit (ulimit -n): no database connection can be opened')
    t.notOk(isDatabaseUnavailable(Object.assign(new Error('write EMFILE'), { code: 'EMFILE', syscall: 'write' })), 'only while connecting')
  })

  t.test('a webhook call this worker cannot open uses no attempt and fails no step; it is made once when descriptors are back', async (t) => {
    const rt = await setupRuntime(t)
    rt.clock.set(new Date('2026-03-02T09:00:00Z'))
    const templateId = await rt.template([{ kind: 'webhook', name: 'Ask ValueCo' }])
    const N = 5
    for (let i = 0; i < N; i++) await rt.start(templateId)
    const lines: { level: string; msg: string | undefined; obj: object }[] = []
    const log: Logger = {
      info: (obj, msg) => lines.push({ level: 'info', msg, obj }),
      warn: (obj, msg) => lines.push({ level: 'warn', msg, obj }),
      error: (obj, msg) => lines.push({ level: 'error', msg, obj })
    }
    const scheduler = rt.newScheduler({}, log)
    // The statements the pass runs find their connections open: only the calls need a new descriptor.
    await Promise.all(Array.from({ length: 8 }, () => sql`select pg_sleep(0.05)`.execute(rt.db)))
    const dueTimes = async () => (await rt.db.selectFrom('deliveries').select('next_attempt_at').execute()).map((d) => d.next_attempt_at.getTime()).sort()
    const dueBefore = await dueTimes()
    await short(() => scheduler.runOnce())

    t.equal(rt.provider.calls.length, 0, 'no call reached the provider')
    const attempts = await rt.db.selectFrom('delivery_attempts').select(['outcome', 'error']).execute()
    t.same(attempts, [], 'no attempt was logged')
    const held = await rt.db.selectFrom('deliveries').select(['status', 'attempt_count', 'next_attempt_at']).execute()
    t.equal(held.length, N)
    t.ok(held.every((d) => d.status === 'pending' && d.attempt_count === 0), `each delivery waits, uncounted: ${JSON.stringify(held)}`)
    const steps = await rt.db.selectFrom('instance_steps').select('state').execute()
    t.ok(steps.every((s) => s.state === 'due'), 'each step is still due')
    const warnings = lines.filter((l) => l.level !== 'info')
    t.equal(warnings.length, 1, `one warning for ${N} calls, not one a call: ${JSON.stringify(warnings)}`)
    t.match(warnings[0], { level: 'warn', msg: /cannot open connections: this machine is short of file descriptors.*no call was made/, obj: { code: 'EMFILE' } })

    // Within the pause no call is claimed: each would fail alike, and a backlog went round, claimed and put back, every 2 s.
    rt.clock.advance(1000)
    await scheduler.runOnce()
    t.equal(rt.provider.calls.length, 0, 'no call within the pause')
    const fences = await rt.db.selectFrom('deliveries').select('fence').execute()
    t.ok(fences.every((d) => d.fence === 1), `claimed once each, not again within the pause: ${JSON.stringify(fences)}`)
    t.same(await dueTimes(), dueBefore, 'each at its due time still, its place in the line kept')

    rt.clock.advance(1000)
    await scheduler.runOnce()
    t.equal(rt.provider.calls.length, N, 'each call was made once')
    t.equal(new Set(rt.provider.calls.map((c) => c.query.deliveryId)).size, N)
    const done = await rt.db.selectFrom('delivery_attempts').select(['attempt_number', 'outcome']).execute()
    t.ok(done.length === N && done.every((a) => a.attempt_number === 1 && a.outcome === 'succeeded'), `one attempt each, the first: ${JSON.stringify(done)}`)
    const resumed = lines.filter((l) => /open connections again/.test(l.msg ?? ''))
    t.match(resumed, [{ level: 'info', obj: { callsWaited: N } }], 'and one line says calls are made again')
  })

  t.test('an API past its open-files limit stays up: its load shedding reads nothing that needs a descriptor', async (t) => {
    const ctx = await setupApp(t, { PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '1000' })
    const { client } = await ctx.newTenant()
    // Two samples of the event loop past the limit (one a second).
    await short(() => new Promise((resolve) => setTimeout(resolve, 2200)))
    t.equal((await client.get('/v1/users')).statusCode, 200, 'the API still answers once descriptors are back')
  })
}
