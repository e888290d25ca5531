import t from 'tap'
import { ConfigError, listenProblem, loadConfig, shutdownDelayMs } from '../../src/config.js'

t.test('WEBHOOK_ALLOWED_TARGETS takes host names and CIDR ranges; a bad entry names the variable', async (t) => {
  t.equal(loadConfig({}).WEBHOOK_ALLOWED_TARGETS, '', 'empty by default')
  t.equal(loadConfig({ WEBHOOK_ALLOWED_TARGETS: '127.0.0.1/32,provider.internal' }).WEBHOOK_ALLOWED_TARGETS, '127.0.0.1/32,provider.internal')
  for (const bad of ['10.0.0.0/33', 'provider.internal:8080', '10.0.0.1/8']) {
    t.throws(() => loadConfig({ WEBHOOK_ALLOWED_TARGETS: bad }), ConfigError, bad)
    t.throws(() => loadConfig({ WEBHOOK_ALLOWED_TARGETS: bad }), { message: new RegExp(`WEBHOOK_ALLOWED_TARGETS: "${bad}" `) }, bad)
  }
})

t.test('the defaults SPEC.md names: a 10 s timeout per attempt, at most 8 attempts, an apiClaim of 15 minutes, WEBHOOK_ALLOW_PRIVATE_NETWORKS off', async (t) => {
  const defaults = loadConfig({})
  t.same([defaults.WEBHOOK_TIMEOUT_MS, defaults.WEBHOOK_MAX_ATTEMPTS, defaults.API_CLAIM_TTL_MS, defaults.WEBHOOK_ALLOW_PRIVATE_NETWORKS],
    [10_000, 8, 15 * 60_000, false])
})

t.test('settings are read from their text: numbers, flags, choices and defaults; a wrong one names the variable', async (t) => {
  const defaults = loadConfig({})
  t.equal(defaults.PORT, 3000)
  t.equal(defaults.LOG_LEVEL, 'info')
  t.equal(defaults.BATON_TRUST_PROXY, 0, 'no proxy in front')
  t.equal(defaults.DATABASE_URL, undefined, 'an optional setting without a default stays unset')
  t.ok(Object.isFrozen(defaults))
  const set = loadConfig({ PORT: '8080', SCHEDULER_BATCH_SIZE: '1e3', LOG_LEVEL: 'warn', PRESSURE_MAX_EVENT_LOOP_UTILIZATION: '0.9' })
  t.same([set.PORT, set.SCHEDULER_BATCH_SIZE, set.LOG_LEVEL, set.PRESSURE_MAX_EVENT_LOOP_UTILIZATION], [8080, 1000, 'warn', 0.9])
  for (const [text, value] of [['true', 1], ['TRUE', 1], ['1', 1], ['false', 0], ['0', 0], ['2', 2], [' 3 ', 3]] as const) {
    t.equal(loadConfig({ BATON_TRUST_PROXY: text }).BATON_TRUST_PROXY, value, `proxies ${text}`)
  }
  const wrong: [Record<string, string>, RegExp][] = [
    [{ PORT: 'abc' }, /PORT: must be an integer$/],
    [{ PORT: '70000' }, /PORT: must be at most 65535$/],
    [{ SCHEDULER_BATCH_SIZE: '1.5' }, /SCHEDULER_BATCH_SIZE: must be an integer$/],
    [{ BATON_TRUST_PROXY: 'yes' }, /BATON_TRUST_PROXY: must be true, false or how many reverse proxies are in front \(0 to 10\)$/],
    [{ BATON_TRUST_PROXY: '11' }, /BATON_TRUST_PROXY: must be true, false or how many reverse proxies are in front \(0 to 10\)$/],
    [{ BATON_TRUST_PROXY: '1.5' }, /BATON_TRUST_PROXY: must be true, false or how many reverse proxies are in front \(0 to 10\)$/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent/],
    [{ DATABASE_URL: 'mysql://db' }, /DATABASE_URL: must be a postgres:\/\/ \(or postgresql:\/\/\) URL, such as postgres:\/\/baton@127\.0\.0\.1:5432\/baton$/],
    // The pattern let these through: they failed only when used, with "Invalid URL" and no variable named.
    [{ DATABASE_URL: 'postgres://baton@db.internal:54320x/baton' }, /DATABASE_URL: is not a URL that can be read/],
    [{ DATABASE_URL: 'postgres://baton@db.internal:99999/baton' }, /DATABASE_URL: is not a URL that can be read/],
    // node-postgres reads the files a TLS connection needs as it reads the string: these were "not a URL that can be
    // read", with advice on percent-encoding the password.
    [{ DATABASE_URL: 'postgres://baton@db.internal/baton?sslmode=verify-full&sslrootcert=%2Fno%2Fsuch%2Fca.pem' },
      /DATABASE_URL: a file it names \(sslrootcert, sslcert or sslkey\) cannot be read \(ENOENT: no such file or directory, open '\/no\/such\/ca\.pem'\); Baton reads it at start$/],
    [{ DATABASE_URL: 'postgres://baton@db.internal/baton?uselibpqcompat=true&sslmode=verify-ca' },
      /DATABASE_URL: uselibpqcompat=true&sslmode=verify-ca checks the server's certificate against the authority sslrootcert=<file> gives, and none is given; or use sslmode=verify-full$/],
    [{ SMTP_URL: 'smtp://mail.example.com:submission' }, /SMTP_URL: is not a URL that can be read/],
    [{ SMTP_URL: 'smtps://' }, /SMTP_URL: is not a URL that can be read \(no host\)/],
    // Mails without an address to send from went out with no From header and an empty envelope sender.
    // A request cannot present a key with a space or a character outside visible ASCII: the operator was locked out.
    [{ BATON_ADMIN_TOKEN: 'correct horse battery staple' }, /BATON_ADMIN_TOKEN: must be visible ASCII characters without spaces/],
    [{ BATON_ADMIN_TOKEN: 'a-test-operator-key-of-enough-length ' }, /BATON_ADMIN_TOKEN: must be visible ASCII characters without spaces/],
    [{ BATON_ADMIN_TOKEN: 'ein-schlüssel-für-den-betreiber' }, /BATON_ADMIN_TOKEN: must be visible ASCII characters without spaces/],
    [{ MAIL_FROM: 'Baton' }, /MAIL_FROM: must be one sender address/],
    [{ MAIL_FROM: 'Baton <baton>' }, /MAIL_FROM: must be one sender address/],
    [{ MAIL_FROM: 'a@example.com, b@example.com' }, /MAIL_FROM: must be one sender address/],
    // As `docker run --env-file` reads a quoted line: the quotes are part of the value.
    [{ MAIL_FROM: '"Baton <baton@localhost>"' }, /MAIL_FROM: remove the quotes around it/],
    [{ MAIL_FROM: "'baton@example.com'" }, /MAIL_FROM: remove the quotes around it/],
    [{ MAIL_FROM: 'Baton <"baton@localhost>' }, /MAIL_FROM: must be one sender address/],
    [{ MAIL_FROM: "baton@example.com'" }, /MAIL_FROM: must be one sender address/]
  ]
  t.equal(loadConfig({ BATON_ADMIN_TOKEN: 'bop_uokFxHfYeNnihntm-pBfG5a9_G43Oi_aUwg4tn9ichw' }).BATON_ADMIN_TOKEN, 'bop_uokFxHfYeNnihntm-pBfG5a9_G43Oi_aUwg4tn9ichw')
  for (const from of ['Baton <baton@localhost>', 'baton@example.com', '"Baton, Inc." <baton@example.com>']) {
    t.equal(loadConfig({ MAIL_FROM: from }).MAIL_FROM, from, from)
  }
  for (const url of ['postgres://baton:p%40ss@127.0.0.1:5432/baton', 'postgresql:///baton?host=/var/run/postgresql', 'postgres://[::1]/baton?options=-c%20search_path%3Dcrm']) {
    t.equal(loadConfig({ DATABASE_URL: url }).DATABASE_URL, url, url)
  }
  t.equal(loadConfig({ SMTP_URL: 'smtp://user:pass@mail.example.com:587' }).SMTP_URL, 'smtp://user:pass@mail.example.com:587')
  for (const [env, message] of wrong) t.throws(() => loadConfig(env), { name: 'ConfigError', message }, JSON.stringify(env))
  t.throws(() => loadConfig({ PORT: 'abc', LOG_LEVEL: 'loud' }), { message: /PORT: must be an integer\n {2}- LOG_LEVEL: must be one of/ }, 'every wrong setting is named')
})

t.test('a listen the settings made fail names the setting to change; any other failure is left as it is', async (t) => {
  const failed = (code: string) => Object.assign(new Error(code), { code })
  const port = (error: Error) => listenProblem(error, '127.0.0.1', 'PORT', 3000, 'stop what listens there or pick another port')
  t.match(port(failed('EADDRINUSE')), { message: 'PORT: 127.0.0.1:3000 is in use; stop what listens there or pick another port (0: any free one)' })
  t.ok(port(failed('EADDRINUSE')) instanceof ConfigError)
  for (const code of ['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EADDRNOTAVAIL']) {
    t.match(listenProblem(failed(code), '192.0.2.1', 'WORKER_HTTP_PORT', 3001, 'x'), { message: new RegExp(`^HOST: "192\\.0\\.2\\.1" is not an address of this machine \\(${code}\\)`) }, code)
  }
  t.equal(port(failed('EACCES')), undefined)
  t.equal(port(new Error('no code')), undefined)
})

t.test('SHUTDOWN_DELAY_MS: unset, an API replica waits 5 s for its load balancer and a whole Baton closes at once', async (t) => {
  t.equal(shutdownDelayMs(loadConfig({}), 'api'), 5000)
  t.equal(shutdownDelayMs(loadConfig({}), 'all'), 0)
  t.equal(shutdownDelayMs(loadConfig({}), 'worker'), 0)
  t.equal(shutdownDelayMs(loadConfig({ SHUTDOWN_DELAY_MS: '0' }), 'api'), 0, 'set, it holds for every role')
  t.equal(shutdownDelayMs(loadConfig({ SHUTDOWN_DELAY_MS: '1500' }), 'all'), 1500)
  t.throws(() => loadConfig({ SHUTDOWN_DELAY_MS: '-1' }), /SHUTDOWN_DELAY_MS/)
})

t.test('SCHEDULER_LEASE_MS must outlast WEBHOOK_TIMEOUT_MS by a second: a call goes out only while its lease covers the timeout', async (t) => {
  // 1000 and 999 were taken: each claim's lease no longer covered the timeout once the claim returned, so
  // every call was put back and claimed again, none made (a probe's worker spun on 20 deliveries for minutes).
  for (const [lease, timeout] of [['1000', '999'], ['2000', '1999'], ['10999', '10000'], ['10000', '10000']]) {
    t.throws(() => loadConfig({ SCHEDULER_LEASE_MS: lease, WEBHOOK_TIMEOUT_MS: timeout }),
      { message: new RegExp(`SCHEDULER_LEASE_MS: must be at least WEBHOOK_TIMEOUT_MS \\+ 1000 \\(${Number(timeout) + 1000}\\)`) }, `${lease} with ${timeout}`)
  }
  t.equal(loadConfig({ SCHEDULER_LEASE_MS: '1100', WEBHOOK_TIMEOUT_MS: '100' }).SCHEDULER_LEASE_MS, 1100, 'the shortest lease the shortest timeout takes')
  t.equal(loadConfig({ SCHEDULER_LEASE_MS: '3600000', WEBHOOK_TIMEOUT_MS: '300000' }).SCHEDULER_LEASE_MS, 3_600_000)
  t.throws(() => loadConfig({ SCHEDULER_LEASE_MS: '1000' }), /SCHEDULER_LEASE_MS: must be at least WEBHOOK_TIMEOUT_MS \+ 1000 \(11000\)/, 'the default timeout needs 11 s')
})

t.test('a number set to blanks is refused, not read as 0 (which would turn RATE_LIMIT_MAX off or put PORT anywhere)', async (t) => {
  for (const [key, value] of [['PORT', ' '], ['RATE_LIMIT_MAX', '  '], ['SHUTDOWN_GRACE_MS', '\t'], ['AUTH_FAILURE_LIMIT', ' \n'], ['PRESSURE_MAX_EVENT_LOOP_UTILIZATION', ' ']]) {
    t.throws(() => loadConfig({ [key!]: value }), { name: 'ConfigError', message: new RegExp(`${key}: must be a(n integer| number)$`, 'm') }, JSON.stringify([key, value]))
  }
  t.equal(loadConfig({ PORT: '' }).PORT, 3000, 'an empty value is unset, as before')
  t.equal(loadConfig({ PORT: ' 8080 ' }).PORT, 8080, 'blanks around a number are read as before')
})

t.test('a number is read in decimal digits only: JavaScript would read 0x10 as 16 and 0b1 as 1', async (t) => {
  for (const [key, value] of [['PORT', '0x10'], ['PORT', '0b1'], ['RATE_LIMIT_MAX', '0o7'], ['SHUTDOWN_GRACE_MS', ' 0X10 '], ['PRESSURE_MAX_EVENT_LOOP_UTILIZATION', '0x0']]) {
    t.throws(() => loadConfig({ [key!]: value }), { name: 'ConfigError', message: new RegExp(`${key}: must be a number written in decimal digits$`, 'm') }, JSON.stringify([key, value]))
  }
  t.equal(loadConfig({ PORT: '+8080' }).PORT, 8080)
  t.equal(loadConfig({ RATE_LIMIT_MAX: '1e3' }).RATE_LIMIT_MAX, 1000, 'an exponent is decimal')
  t.equal(loadConfig({ PRESSURE_MAX_EVENT_LOOP_UTILIZATION: '.5' }).PRESSURE_MAX_EVENT_LOOP_UTILIZATION, 0.5)
  t.throws(() => loadConfig({ PORT: 'abc' }), { message: /PORT: must be an integer$/m }, 'no number at all is refused as before')
})

t.test('a wrong SMTP_URL holding a password is refused naming the setting, without the password', async (t) => {
  const password = 'Zq7-relay-Secret'
  for (const url of [
    `smtp://baton:${password}/x@mail.example.com:587`, // a / left unencoded: the host part ends early
    `smtp://baton:${password}@mail.example.com:submission`,
    `smtps://baton:${password}@:465`,
    `smtpx://baton:${password}@mail.example.com`
  ]) {
    const error = (() => { try { loadConfig({ SMTP_URL: url }) } catch (e) { return e as Error } })()
    t.match(error, { name: 'ConfigError', message: /SMTP_URL: / }, url)
    t.notOk(`${error?.message} ${error?.stack} ${JSON.stringify(error)}`.includes('Secret'), `${url}: no part of the password in the error`)
  }
})
