import pino from 'pino'
import t from 'tap'
import { databaseRefusal, isDatabaseUnavailable, isResourceShortage, refusesConnectionSettings, tlsSettingToCorrect, unavailableReason } from '../../src/db/errors.js'
import { whenDatabaseAnswers } from '../../src/lifecycle.js'

const withCode = (code: string, message = 'x') => Object.assign(new Error(message), { code })

t.test('a lost connection is the database being away; a message the server refused is not', async (t) => {
  t.ok(isDatabaseUnavailable(withCode('08006')), 'connection failure: try again shortly')
  t.ok(isDatabaseUnavailable(withCode('57P01')), 'the server shutting down')
  t.notOk(isDatabaseUnavailable(withCode('08P01', 'bind message has 2 parameter formats but 0 parameters')),
    'a statement with more values than the protocol carries would fail again: not a 503 to retry')
  t.ok(isDatabaseUnavailable(withCode('08P01', 'query_wait_timeout')), 'a pooler\'s own 08P01 (PgBouncer) is an outage')
  t.notOk(isDatabaseUnavailable(withCode('23505')), 'a unique violation')
})

t.test('a server short of disk space or memory (SQLSTATE class 53) is away: the same statement works once it is back', async (t) => {
  t.ok(isDatabaseUnavailable(withCode('53100', 'could not extend file "base/16384/16385": No space left on device')), 'disk_full')
  t.ok(isDatabaseUnavailable(withCode('53200', 'out of shared memory')), 'out_of_memory, max_locks_per_transaction\'s too')
  t.ok(isDatabaseUnavailable(withCode('53000')), 'insufficient_resources')
  t.ok(isResourceShortage(withCode('53100')), 'on a connection that stays sound')
  t.notOk(isResourceShortage(withCode('53300')), 'too_many_connections refuses a connection, not a statement on one')
  // configuration_limit_exceeded: temp_file_limit, on a sound connection (it answered 'no connection to spare', and was replaced).
  t.ok(isDatabaseUnavailable(withCode('53400', 'temporary file size exceeds temp_file_limit (1024kB)')))
  t.ok(isResourceShortage(withCode('53400')), 'a statement past a limit, on a connection that stays sound')
})

t.test('a database that takes no writes, or refuses the user of a new connection, is away for a running process; the start names the setting', async (t) => {
  t.ok(isDatabaseUnavailable(withCode('25006', 'cannot execute INSERT in a read-only transaction')), 'a standby, or default_transaction_read_only')
  t.ok(isDatabaseUnavailable(withCode('28P01', 'password authentication failed for user "baton"')))
  t.ok(isDatabaseUnavailable(withCode('28000', 'role "baton" is not permitted to log in')))
  // The routines as Postgres 15 names them: CONNECT withheld fails the connection in CheckMyDatabase;
  // CREATE withheld on the database fails a statement in aclcheck_error, with the same words.
  const connectWithheld = Object.assign(withCode('42501', 'permission denied for database "baton"'), { routine: 'CheckMyDatabase' })
  const createWithheld = Object.assign(withCode('42501', 'permission denied for database baton'), { routine: 'aclcheck_error' })
  t.ok(isDatabaseUnavailable(connectWithheld))
  t.ok(refusesConnectionSettings(connectWithheld), 'CONNECT withheld')
  t.notOk(refusesConnectionSettings(createWithheld), 'CREATE withheld is no connection setting')
  t.notOk(isDatabaseUnavailable(createWithheld), 'CREATE withheld is no outage to wait out')
  t.notOk(refusesConnectionSettings(withCode('42501', 'permission denied for table deliveries')), 'a table\'s privilege is no connection setting')
  t.notOk(isDatabaseUnavailable(withCode('42501', 'permission denied for table deliveries')))
})

t.test('the log says which way the database is unavailable, since each asks something else of the operator', async (t) => {
  t.equal(unavailableReason(withCode('25006')), 'the database takes no writes (read-only)')
  t.equal(unavailableReason(withCode('28P01')), 'the database refuses the user, password or database name Baton connects with')
  t.equal(unavailableReason(withCode('3D000')), 'the database refuses the user, password or database name Baton connects with')
  t.equal(unavailableReason(withCode('53300')), 'the database has no connection to spare')
  t.equal(unavailableReason(withCode('57014')), 'the database did not answer in time')
  t.equal(unavailableReason(withCode('53100')), 'the database has no disk space left for writes')
  t.equal(unavailableReason(withCode('53200')), 'the database is out of memory')
  t.equal(unavailableReason(withCode('53000')), 'the database is short of resources')
  t.equal(unavailableReason(withCode('53400')), 'the database refused a statement past one of its limits (temp_file_limit, say)')
  t.equal(unavailableReason(new Error('Connection terminated unexpectedly')), 'the database did not answer')
  t.equal(unavailableReason(new AggregateError([new Error('x'), withCode('28000')])), 'the database refuses the user, password or database name Baton connects with',
    'an AggregateError (every address refused) by the error that tells')
})

t.test('at the start, a TLS setting to correct ends it; a handshake broken otherwise (a server restarting, a failover\'s proxy) is waited out', async (t) => {
  const refused = withCode('DEPTH_ZERO_SELF_SIGNED_CERT', 'self-signed certificate')
  const plainPort = new Error('C0B7:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/openssl/openssl/ssl/record/ssl3_record.c:354:\n')
  const broken = new Error('C0B7:error:0A000410:SSL routines:ssl3_read_bytes:sslv3 alert handshake failure:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1605:SSL alert number 40\n')
  t.ok(tlsSettingToCorrect(refused), 'a refused certificate')
  t.ok(tlsSettingToCorrect(new Error('The server does not support SSL connections')), 'a server taking no TLS')
  t.ok(tlsSettingToCorrect(plainPort), 'a port that speaks no TLS')
  t.notOk(tlsSettingToCorrect(broken), 'a handshake broken by the other side')
  t.ok(isDatabaseUnavailable(broken), 'which a running process waits out too')

  const log = pino({ level: 'silent' })
  let tries = 0
  const answer = await whenDatabaseAnswers(log, 'a probe', async () => {
    tries += 1
    if (tries === 1) throw broken
    return 'answered'
  })
  t.same([answer, tries], ['answered', 2], 'the start waited for a handshake broken once, and went on')
  await t.rejects(whenDatabaseAnswers(log, 'a probe', async () => { throw refused }), refused, 'and ends at a refused certificate')
})

t.test('a refusal by the database is said for a person to read, without the message that names the schema', async (t) => {
  const refused = (code: string) => Object.assign(new Error('insert or update on table "x" violates constraint "x_fkey"'), { code, severity: 'ERROR' })
  t.equal(databaseRefusal(refused('23503')), 'a record it refers to does not exist, or was deleted meanwhile, SQLSTATE 23503')
  t.equal(databaseRefusal(refused('23505')), 'it collided with a change made at the same time, SQLSTATE 23505')
  t.equal(databaseRefusal(refused('23514')), 'the database refused its change as breaking a rule of the data, SQLSTATE 23514')
  t.equal(databaseRefusal(refused('22P02')), 'the database refused a value of its change, SQLSTATE 22P02')
  t.equal(databaseRefusal(refused('42P01')), 'the database refused its change, SQLSTATE 42P01')
  t.equal(databaseRefusal(withCode('EPIPE')), undefined, 'a socket\'s error is not the server\'s answer')
  t.equal(databaseRefusal(new Error('the runner broke')), undefined)
  t.equal(databaseRefusal('23503'), undefined)
})
