// What each of Baton's connections sets when it opens (src/db/postgres.ts, poolConfig): no JIT
// compiling ever, and on an API-only process's quiet connections, work triggers that stay silent.
import t from 'tap'
import { connectionOf } from '../../src/db/postgres.js'
import { ADMIN_URL, connectionSettings } from '../helpers/database.js'

const settingsOf = (quietTriggers: boolean, url = ADMIN_URL) => connectionSettings(url, { quietTriggers })

t.test('a connection never JIT compiles a statement: the estimates of a claim over history passed jit_above_cost', async (t) => {
  t.equal((await settingsOf(false)).jit, 'off')
  t.equal((await settingsOf(true)).jit, 'off', 'nor a quiet one')
})

t.test('only a quiet connection silences the work triggers', async (t) => {
  t.not((await settingsOf(false)).notify, 'off')
  t.equal((await settingsOf(true)).notify, 'off')
})

t.test('the server finds a connection lost without a word in about two minutes, not the system\'s two hours; the string\'s own keepalive wins', async (t) => {
  t.equal((await settingsOf(false)).keepalives, '60 10 6 120000')
  t.equal((await settingsOf(true)).keepalives, '60 10 6 120000', 'a quiet connection alike')
  const url = new URL(ADMIN_URL)
  url.searchParams.set('options', '-c tcp_keepalives_idle=300')
  t.equal((await settingsOf(false, url.toString())).keepalives, '300 10 6 120000', 'an operator\'s own setting stays')
})

t.test('options in the connection string are kept, and Baton\'s own still hold beside them', async (t) => {
  const url = new URL(ADMIN_URL)
  url.searchParams.set('options', '-c work_mem=8MB -c jit=on -c baton.notify=on')
  const quiet = await settingsOf(true, url.toString())
  t.equal(quiet.workMem, '8MB', 'the string\'s own option')
  t.equal(quiet.jit, 'off', 'no JIT, whatever the string says')
  t.equal(quiet.notify, 'off', 'a quiet connection stays quiet')
  t.equal((await settingsOf(false, url.toString())).workMem, '8MB')
})

t.test('a connection string with options is read as node-postgres reads it, its options first and Baton\'s after', async (t) => {
  const ours = ['-c jit=off']
  t.same(connectionOf('postgres://db.example/baton', ours), { connectionString: 'postgres://db.example/baton', options: '-c jit=off' }, 'without options: the string as it is')
  t.same(connectionOf('postgres://db.example/baton?options=', ours), { host: 'db.example', port: '', database: 'baton', user: '', password: '', options: '-c jit=off' })
  const socket = connectionOf('postgresql://baton@/baton?host=/var/run/postgresql&options=-c%20search_path%3Dcrm', ours)
  t.match(socket, { host: '/var/run/postgresql', user: 'baton', database: 'baton', options: '-c search_path=crm -c jit=off' }, 'a socket with an empty host')
  t.notOk('connectionString' in socket)
  t.match(connectionOf('postgres://baton:50%off@db.example/baton?application_name=baton:api&host=/var/run/postgresql&options=-c search_path=crm', ours),
    { host: '/var/run/postgresql', password: '50%off', application_name: 'baton:api', options: '-c search_path=crm -c jit=off' }, 'a bare % in the password')
  t.match(connectionOf('postgres://db.example/baton?options=-c%20a%3D1&options=-c%20search_path%3Dcrm', ours), { options: '-c search_path=crm -c jit=off' }, 'the last of several, as node-postgres keeps')
  t.match(connectionOf('postgres://db.example/baton?options=-c%20search_path%3Da%5C', ours), { options: '-c search_path=a -c jit=off' }, 'a backslash at the end escapes nothing of ours')
  t.match(connectionOf('postgres://db.example/baton?options=-c%20search_path%3Da%5C%5C', ours), { options: '-c search_path=a\\\\ -c jit=off' }, 'an escaped backslash stays')
  t.same(connectionOf('postgres://u:p@[::1/db?options=x', ours), { connectionString: 'postgres://u:p@[::1/db?options=x', options: '-c jit=off' }, 'a string it cannot read is left to node-postgres')
  const defaults = ['-c tcp_keepalives_idle=60']
  t.match(connectionOf('postgres://db.example/baton', ours, defaults), { options: '-c tcp_keepalives_idle=60 -c jit=off' }, 'defaults first')
  t.match(connectionOf('postgres://db.example/baton?options=-c%20tcp_keepalives_idle%3D300', ours, defaults),
    { options: '-c tcp_keepalives_idle=60 -c tcp_keepalives_idle=300 -c jit=off' }, 'then the string\'s, which the server takes over the defaults')
})
