// A real scheduler whose calls wait for a full host: each waiting call listens for the worker's stop on
// one signal, and more than ten at once are a worker at work, not a leak.
import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { hostLimitedScheduler, setupRuntime } from '../helpers/runtime.js'

const rt = await setupRuntime(t)

t.test('more than ten calls waiting for a full host raise no listener-leak warning', async (t) => {
  const LIMIT = 12
  const warnings: Error[] = []
  const onWarning = (warning: Error) => warnings.push(warning)
  process.on('warning', onWarning)
  t.teardown(() => process.off('warning', onWarning))
  const answers: (() => void)[] = []
  let lastCallAt = new Date(0)
  rt.provider.always(async () => {
    lastCallAt = new Date()
    await new Promise<void>((resolve) => answers.push(resolve))
    return { status: 200, body: 'ok' }
  })
  const answerAll = () => {
    rt.provider.always({ status: 200, body: 'ok' })
    for (const answer of answers.splice(0)) answer()
  }
  t.teardown(answerAll)
  // Twice the host's slots in places: the calls beyond the limit wait in the host's line.
  const scheduler = hostLimitedScheduler(t, rt, { perHostConcurrency: LIMIT, concurrency: 2 * LIMIT }, 4)
  const templateId = await rt.template([{ kind: 'webhook', name: 'Slow provider' }])
  for (let i = 0; i < 2 * LIMIT; i++) await rt.start(templateId)
  const run = scheduler.runOnce()
  await until(async () => answers.length === LIMIT)
  // The line looks for a freed slot every 100 ms: a look a while after the last call went out is the
  // waiting calls', all in the line by then.
  await until(async () => {
    const { rows: [row] } = await sql<{ n: number }>`
      select count(*)::int as n from pg_stat_activity
      where datname = current_database() and query like '%try_host_slot%' and query_start > ${new Date(lastCallAt.getTime() + 150)} and pid <> pg_backend_pid()`.execute(rt.db)
    return row!.n > 0
  })
  answerAll()
  t.equal((await run).deliveries >= 2 * LIMIT, true, 'every call was claimed')
  await new Promise((resolve) => setImmediate(resolve))
  t.same(warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message), [])
})

async function until(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
