// What each of Baton's connections sets when it opens (src/db/postgres.ts, poolConfig): no JIT
// compiling ever, and on an API-only process's quiet connections, work triggers that stay silent.
import t from 'tap'
import { openPostgres } from '../../src/db/connect.js'
import { sql } from '../../src/db/kysely.js'
import { ADMIN_URL } from '../helpers/database.js'

const settingsOf = async (quietTriggers: boolean) => {
  const handle = openPostgres(ADMIN_URL, { poolMax: 1, quietTriggers })
  try {
    const { rows } = await sql<{ jit: string; notify: string | null }>`
      select current_setting('jit') as jit, current_setting('baton.notify', true) as notify`.execute(handle.db)
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
