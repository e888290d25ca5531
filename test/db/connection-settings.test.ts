// What each of Baton's connections sets when it opens (src/db/postgres.ts, poolConfig): no JIT
// compiling ever, and on an API-only process's quiet connections, work triggers that stay silent.
import t from 'tap'
import { openPostgres } from '../../src/db/connect.js'
import { withOptions } from '../../src/db/postgres.js'
import { sql } from '../../src/db/kysely.js'
import { ADMIN_URL } from '../helpers/database.js'

const settingsOf = async (quietTriggers: boolean, url = ADMIN_URL) => {
  const handle = openPostgres(url, { poolMax: 1, quietTriggers })
  try {
    const { rows } = await sql<{ jit: string; notify: string | null; workMem: string }>`
      select current_setting('jit') as jit, current_setting('baton.notify', true) as notify, current_setting('work_mem') as "workMem"`.execute(handle.db)
    return rows[0]!
  } finally {
    await handle.close()
  }
}

t.test('a connection never JIT compiles a statement: the estimates of a claim over history passed jit_above_cost', async (t) => {
  t.equal((await settingsOf(false)).jit, 'off')
  t.equal((await settingsOf(true)).jit, 'off', 'nor a quiet one')
})

t.test('only a quiet connection silences the work triggers', async (t) => {
  t.not((await settingsOf(false)).notify, 'off')
  t.equal((await settingsOf(true)).notify, 'off')
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

t.test('the connection string keeps everything but its options', async (t) => {
  t.same(withOptions('postgres://u:p%40ss@db.example:6432/baton?sslmode=require&options=-c%20work_mem%3D8MB', ['-c jit=off']), {
    connectionString: 'postgres://u:p%40ss@db.example:6432/baton?sslmode=require',
    options: '-c work_mem=8MB -c jit=off'
  })
  t.same(withOptions('postgres://db.example/baton', ['-c jit=off']), { connectionString: 'postgres://db.example/baton', options: '-c jit=off' })
  t.same(withOptions('not a url', ['-c jit=off']), { connectionString: 'not a url', options: '-c jit=off' })
})
