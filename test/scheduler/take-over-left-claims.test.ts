import { sql } from '../../src/db/kysely.js'
import t from 'tap'
import { claimDeliveries } from '../../src/scheduler/claim-deliveries.js'
import { setupRuntime } from '../helpers/runtime.js'

// On the embedded database one process runs the only worker: the claims a process that ended (a crash,
// a kill) left are taken back at the next start, not when their leases end (60 s by default).
const rt = await setupRuntime(t)

/** A webhook step's delivery and a mail, both claimed by a process that then ended, their leases running on. */
async function leftClaimed(name: string) {
  const templateId = await rt.template([{ kind: 'webhook', name, refersTo: { property: true } }])
  const instance = await rt.start(templateId)
  const claimed = await claimDeliveries(rt.db, { workerId: 'a-process-that-ended', now: rt.clock.now(), leaseMs: 60_000, limit: 100 })
  const delivery = claimed.find((c) => c.stepId === instance.steps[0].id)
  if (!delivery) throw new Error('the delivery was not claimed')
  const mailKey = `left ${name}`
  await sql`insert into outbox_mails (tenant_id, id, dedupe_key, kind, to_address, subject, body, next_attempt_at, lease_expires_at, attempt_count)
    values (${rt.tenant.id}, gen_random_uuid(), ${mailKey}, 'stepSkipped', 'clara@example.com', ${name}, 'A step was skipped.', ${rt.clock.now()},
      ${new Date(rt.clock.now().getTime() + 120_000)}, 1)`.execute(rt.db)
  return { stepId: instance.steps[0].id as string, subject: name }
}

const attemptsOf = async (stepId: string) =>
  ((await rt.api.get(`/v1/deliveries?stepId=${stepId}`)).data.items[0].attempts as { outcome: string; error: string | null }[])

async function until(done: () => boolean | Promise<boolean>): Promise<boolean> {
  for (let i = 0; i < 300 && !(await done()); i++) await new Promise((resolve) => setTimeout(resolve, 10))
  return done()
}

t.test('a sole worker takes back at its start the calls and mails a process that ended left claimed, and makes them at once', async (t) => {
  const left = await leftClaimed('Left by a crash')
  const logged: { context: object; message: string }[] = []
  const log = { info: (context: object, message: string) => { logged.push({ context, message }) }, warn() {}, error() {} }
  // The clock stands still: only the take-over, not a lease's end, can free them.
  const scheduler = rt.newScheduler({ pollIntervalMs: 20 }, log, { soleWorker: true })
  t.teardown(() => scheduler.stop(1000))
  await scheduler.start()
  t.ok(await until(() => rt.provider.calls.some((c) => c.query.stepId === left.stepId)), 'the call is made')
  t.ok(await until(() => rt.smtp.mails.some((m) => m.subject === left.subject)), 'the mail is sent')
  t.ok(await until(async () => (await attemptsOf(left.stepId)).length === 2))
  t.match(await attemptsOf(left.stepId), [{ outcome: 'aborted', error: /lease expired/ }, { outcome: 'succeeded' }],
    'the claim left is logged as the reaper logs a lease that ran out, then the call is made')
  t.match(logged.find((l) => l.message.startsWith('took back')), { context: { deliveries: 1, mails: 1 } }, 'the worker says what it took back')
  await scheduler.stop(1000)
})

t.test('a worker that may not be the only one leaves the claims to their leases', async (t) => {
  const left = await leftClaimed('Left, with other workers about')
  const scheduler = rt.newScheduler({ pollIntervalMs: 20 })
  t.teardown(() => scheduler.stop(1000))
  await scheduler.start()
  await new Promise((resolve) => setTimeout(resolve, 300))
  await scheduler.stop(1000)
  t.notOk(rt.provider.calls.some((c) => c.query.stepId === left.stepId), 'no call: another worker may hold it')
  t.notOk(rt.smtp.mails.some((m) => m.subject === left.subject), 'no mail')
  t.same(await attemptsOf(left.stepId), [])
  // Left as it is, the first test's worker would have taken them; they go now, for the file's end.
  await sql`update deliveries set status = 'cancelled', lease_expires_at = null, lease_owner = null where status = 'running'`.execute(rt.db)
})
