// Faults of the machine Baton itself runs on: a process past its open-files limit (EMFILE). A worker
// took the database's connect error for a fault of its own ("scheduler pass failed") and left calls whose
// outcome it could not write to their leases. The tests lower this process's own limit for a moment.
import pg from 'pg'
import t from 'tap'
import { isDatabaseUnavailable, unavailableReason } from '../../src/db/errors.js'
import { databaseUrl } from '../helpers/database.js'
import { fdLimit, fdLimitMissing } from '../helpers/fd-limit.js'

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

  t.test('a database connection that cannot be opened for want of descriptors is the database away: 503, a backoff', async (t) => {
    const client = new pg.Client({ connectionString: databaseUrl('postgres') })
    const error = await short(() => client.connect().then(() => undefined, (e: unknown) => e))
    await client.end().catch(() => {})
    t.match(error, { code: 'EMFILE', syscall: 'connect' })
    t.ok(isDatabaseUnavailable(error), 'unavailable, as an outage')
    t.equal(unavailableReason(error), 'this process reached its open-files limit (ulimit -n): no database connection can be opened')
    t.notOk(isDatabaseUnavailable(Object.assign(new Error('write EMFILE'), { code: 'EMFILE', syscall: 'write' })), 'only while connecting')
  })

}
