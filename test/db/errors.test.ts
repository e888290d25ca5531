import t from 'tap'
import { isDatabaseUnavailable } from '../../src/db/errors.js'

const withCode = (code: string, message = 'x') => Object.assign(new Error(message), { code })

t.test('a lost connection is the database being away; a message the server refused is not', async (t) => {
  t.ok(isDatabaseUnavailable(withCode('08006')), 'connection failure: try again shortly')
  t.ok(isDatabaseUnavailable(withCode('57P01')), 'the server shutting down')
  t.notOk(isDatabaseUnavailable(withCode('08P01', 'bind message has 2 parameter formats but 0 parameters')),
    'a statement with more values than the protocol carries would fail again: not a 503 to retry')
  t.ok(isDatabaseUnavailable(withCode('08P01', 'query_wait_timeout')), 'a pooler\'s own 08P01 (PgBouncer) is an outage')
  t.notOk(isDatabaseUnavailable(withCode('23505')), 'a unique violation')
})
