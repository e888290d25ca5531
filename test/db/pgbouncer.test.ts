import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, existsSync, writeFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { createServer, type AddressInfo } from 'node:net'
import t from 'tap'
import { ADMIN_URL, createTestDatabase } from '../helpers/database.js'
import { runScript, workerEnv } from '../helpers/process.js'

// Baton behind PgBouncer, which CI machines may lack: the behaviour itself is tested without it
// (test/db/own-session.test.ts); this runs the worker's and the API's start through a real one.
const binary = ['/usr/sbin', '/usr/local/sbin', '/usr/local/bin', ...(process.env.PATH ?? '').split(delimiter)]
  .map((dir) => join(dir, 'pgbouncer')).find((path) => existsSync(path))
const runsAsRoot = process.getuid?.() === 0
const skip = !binary ? 'pgbouncer is not installed (apt-get install pgbouncer)'
  : runsAsRoot && spawnSync('id', ['nobody']).status !== 0 ? 'pgbouncer will not run as root, and there is no user nobody to run it as' : false

t.setTimeout(180_000)

async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

t.test('behind PgBouncer: the worker starts through session mode and is refused through transaction mode; the API starts through transaction mode', { skip }, async (t) => {
  const database = await createTestDatabase()
  t.teardown(() => database.drop())
  const server = new URL(ADMIN_URL)
  const user = decodeURIComponent(server.username || 'postgres')
  const dir = await mkdtemp(join(tmpdir(), 'baton-pgbouncer-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const port = await freePort()
  const target = `host=${server.hostname} port=${server.port || '5432'} dbname=${database.name}`
  writeFileSync(join(dir, 'users.txt'), `"${user}" ""\n`)
  writeFileSync(join(dir, 'pgbouncer.ini'), [
    '[databases]',
    `session = ${target} pool_mode=session`,
    `transaction = ${target} pool_mode=transaction`,
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${port}`,
    'unix_socket_dir =',
    'auth_type = trust',
    `auth_file = ${join(dir, 'users.txt')}`,
    // What README's "Behind a connection pooler" tells an operator to set.
    'ignore_startup_parameters = options, statement_timeout, idle_in_transaction_session_timeout',
    ''
  ].join('\n'))
  if (runsAsRoot) for (const path of [dir, join(dir, 'users.txt'), join(dir, 'pgbouncer.ini')]) chmodSync(path, 0o755)
  const bouncer = spawn(binary!, [...(runsAsRoot ? ['-u', 'nobody'] : []), join(dir, 'pgbouncer.ini')], { stdio: ['ignore', 'ignore', 'pipe'] })
  let bouncerLog = ''
  bouncer.stderr.on('data', (chunk: Buffer) => (bouncerLog += chunk.toString()))
  t.teardown(() => bouncer.kill('SIGKILL'))
  for (let waited = 0; !/listening on/.test(bouncerLog); waited += 50) {
    if (waited > 10_000 || bouncer.exitCode !== null) throw new Error(`pgbouncer did not start:\n${bouncerLog}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const through = (pool: string) => `postgres://${encodeURIComponent(user)}@127.0.0.1:${port}/${pool}`

  const refused = runScript('src/server.ts', { ...workerEnv(database.name, dir, 'pooled'), DATABASE_URL: through('transaction'), DATABASE_PREPARED_STATEMENTS: 'false' }, ['--role=worker'])
  t.teardown(() => refused.child.kill('SIGKILL'))
  const ended = await Promise.race([refused.exited, new Promise((resolve) => setTimeout(() => resolve('still running after 60 s'), 60_000).unref())])
  t.equal(ended, 1, refused.output())
  t.match(refused.output(), /DATABASE_URL: the worker needs database sessions of its own, and .*pool_mode = transaction/)

  const worker = runScript('src/server.ts', { ...workerEnv(database.name, dir, 'session'), DATABASE_URL: through('session'), LOG_LEVEL: 'info' }, ['--role=worker'])
  t.teardown(() => worker.child.kill('SIGKILL'))
  await worker.waitFor(/Baton worker started/, 60_000)
  worker.child.kill('SIGTERM')
  t.equal(await worker.exited, 0, 'the worker through session mode started and stopped')

  const api = runScript('src/server.ts', {
    DATABASE_URL: through('transaction'), DATABASE_PREPARED_STATEMENTS: 'false', PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', NODE_ENV: 'test',
    BATON_ADMIN_TOKEN: 'pgbouncer-test-operator-key-0123456789', BATON_DATA_DIR: dir
  }, ['--role=api'])
  t.teardown(() => api.child.kill('SIGKILL'))
  const [, address] = await api.waitFor(/Baton listening on (http:\/\/[\d.:]+)/, 60_000)
  const tenants = await fetch(`${address}/v1/tenants`, { headers: { authorization: 'Bearer pgbouncer-test-operator-key-0123456789' } })
  t.equal(tenants.status, 200, 'the API through transaction mode answers')
  api.child.kill('SIGTERM')
  t.equal(await api.exited, 0)
})
