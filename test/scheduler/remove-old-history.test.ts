import { sql } from '../../src/db/kysely.js'
import t from 'tap'
import { removeOldHistory } from '../../src/scheduler/remove-old-history.js'
import { DAY } from '../helpers/clock.js'
import { setupRuntime } from '../helpers/runtime.js'

// Finished data older than the retention goes, in batches; open processes and recent history stay.
const rt = await setupRuntime(t)
const count = async (table: 'process_instances' | 'instance_steps' | 'deliveries' | 'delivery_attempts' | 'activities' | 'outbox_mails') =>
  (await sql<{ n: number }>`select count(*)::int as n from ${sql.table(table)}`.execute(rt.db)).rows[0]!.n

t.test('processes that ended long ago go with their steps, deliveries, attempts and activities; the rest stays', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Re-value', refersTo: { property: true } }], { notifyOnCompletion: true })
  const task = await rt.template([{ kind: 'task', name: 'Still open' }])
  const old = []
  for (let i = 0; i < 5; i++) old.push(await rt.start(templateId))
  await rt.scheduler.runOnce()
  const open = await rt.start(task)
  const propertyUpdate = await rt.api.patch(`/v1/properties/${rt.propertyId}`, { fields: { price: 1 } })
  t.equal(propertyUpdate.statusCode, 200)
  const before = { instances: await count('process_instances'), activities: await count('activities'), mails: await count('outbox_mails') }
  t.equal((await sql<{ n: number }>`select count(*)::int as n from process_instances where status = 'completed'`.execute(rt.db)).rows[0]!.n, 5)

  t.equal(await removeOldHistory(rt.db, rt.clock.now(), 90), 0, 'nothing is old yet')
  t.equal(await removeOldHistory(rt.db, new Date(rt.clock.now().getTime() + 100 * DAY), 0), 0, 'a retention of 0 keeps all')

  const later = new Date(rt.clock.now().getTime() + 91 * DAY)
  let removed = 0
  for (let pass = await removeOldHistory(rt.db, later, 90, 2); pass > 0; pass = await removeOldHistory(rt.db, later, 90, 2)) removed += pass
  t.equal(removed, 5 + 5, 'five processes and their five completion mails, two of each per call')
  t.equal(await count('process_instances'), before.instances - 5, 'the finished processes are gone')
  t.equal(await count('deliveries'), 0, 'their deliveries too')
  t.equal(await count('delivery_attempts'), 0, 'and the attempts')
  const left = await rt.db.selectFrom('activities').select(['instance_id']).execute()
  t.ok(left.every((a) => a.instance_id === null || a.instance_id === open.id), 'only the open process\'s and the record\'s own activities remain')
  t.equal((await rt.instance(open.id)).status, 'running', 'the open process is untouched')
  t.equal(await count('outbox_mails'), before.mails - 5)
})

t.test('a sent mail whose email step has not heard of it yet stays, however old', async (t) => {
  const sent = rt.clock.now()
  await sql`insert into outbox_mails (tenant_id, id, dedupe_key, kind, to_address, subject, body, sent_at, settle_step)
    values (${rt.tenant.id}, gen_random_uuid(), 'retention:unsettled', 'emailStep', 'clara@example.com', 'Unsettled', 'x', ${sent}, true),
           (${rt.tenant.id}, gen_random_uuid(), 'retention:settled', 'emailStep', 'clara@example.com', 'Settled', 'x', ${sent}, false)`.execute(rt.db)
  const later = new Date(sent.getTime() + 91 * DAY)
  while ((await removeOldHistory(rt.db, later, 90)) > 0);
  const left = (await sql<{ subject: string }>`select subject from outbox_mails where dedupe_key like 'retention:%'`.execute(rt.db)).rows
  t.same(left.map((m) => m.subject), ['Unsettled'], 'the settled one goes, the unsettled one stays for its step')
})
