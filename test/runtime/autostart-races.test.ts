import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import type { DB } from '../../src/db/connect.js'
import type { Response } from '../helpers/app.js'
import { waitForLockWait } from '../helpers/database.js'
import { setupRuntime } from '../helpers/runtime.js'

// A record write's autostart against a change of its template committed meanwhile: the write locks the
// templates it read (FOR KEY SHARE), so the change waits for it, and what the write started is what
// the template said when it was read. The write is held right after that read, at its run's claim.
const rt = await setupRuntime(t)
const api = rt.api
const STALL = 4711

/** An active template that starts on the creation of a property. */
async function welcomeTemplate(): Promise<{ id: string }> {
  const created = await api.post('/v1/process-templates', {
    name: 'Welcome the property', controllerUserId: rt.controller.id, autostart: { on: 'recordCreated', record: 'property', responsible: { user: rt.worker.id } }
  })
  await api.post(`/v1/process-templates/${created.data.id}/steps`, { kind: 'task', name: 'Take photos', refersTo: { property: true } })
  const on = await api.patch(`/v1/process-templates/${created.data.id}`, { active: true })
  if (on.statusCode !== 200) throw new Error(on.body)
  return { id: created.data.id }
}

/**
 * Holds every record write at its autostart run's claim (after it read the templates) until `release`:
 * a trigger before the claim's insert waits for an advisory lock a transaction of the test holds.
 */
async function stallClaims(db: DB): Promise<{ release(): Promise<void> }> {
  await sql.raw(`
    create function stall_claim() returns trigger language plpgsql as $$
    begin perform pg_advisory_xact_lock_shared(${STALL}); return new; end $$;
    create trigger stall_claim before insert on autostart_runs for each row execute function stall_claim();
  `).execute(db)
  let locked!: () => void
  let finish!: () => void
  const isLocked = new Promise<void>((resolve) => (locked = resolve))
  const finishing = new Promise<void>((resolve) => (finish = resolve))
  const holder = db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(${STALL})`.execute(trx)
    locked()
    await finishing
  })
  await isLocked
  return {
    async release() {
      finish()
      await holder
      await sql.raw('drop trigger stall_claim on autostart_runs; drop function stall_claim()').execute(db)
    }
  }
}

/** Whether `pending` waits for a lock (besides the held write) rather than finishing at once; fails after about 5 s. */
async function waitsForALock(pending: Promise<unknown>): Promise<boolean> {
  let done = false
  void pending.then(() => (done = true), () => (done = true))
  for (let i = 0; i < 500; i += 1) {
    if (done) return false
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock'`.execute(rt.db)
    if (rows[0]!.n >= 2) return true
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  throw new Error('the change neither finished nor waited')
}

/** Creates a property, holds it at its claim, makes `change` to the template meanwhile, then lets both go on. */
async function createWhile(change: () => Promise<Response>) {
  const stall = await stallClaims(rt.db)
  const writing = api.post('/v1/properties', { maintainerUserId: rt.worker.id, fields: { street: 'Am Hafen 2' } })
  await waitForLockWait(rt.db)
  const changing = change()
  const waited = await waitsForALock(changing)
  await stall.release()
  return { write: await writing, change: await changing, waited }
}

t.test('an autostart removed while a property is created: the removal waits for the write, whose process started before it', async (t) => {
  const template = await welcomeTemplate()
  const { write, change, waited } = await createWhile(() => api.patch(`/v1/process-templates/${template.id}`, { autostart: null }))
  t.equal(write.statusCode, 201, write.body)
  t.equal(change.statusCode, 200, change.body)
  t.ok(waited, 'the removal waited for the write that read the autostart')
  const processes = (await api.get(`/v1/process-instances?propertyId=${write.data.id}`)).data.items
  t.equal(processes.length, 1, 'the write started the process the template said to when it was read')
  const later = await api.post('/v1/properties', { maintainerUserId: rt.worker.id, fields: { street: 'Am Hafen 4' } })
  t.same((await api.get(`/v1/process-instances?propertyId=${later.data.id}`)).data.items, [], 'a write after the removal starts nothing')
})

t.test('a template deleted while a property is created: the write succeeds, the deletion waits and finds the process', async (t) => {
  const template = await welcomeTemplate()
  const { write, change, waited } = await createWhile(() => api.delete(`/v1/process-templates/${template.id}`))
  t.equal(write.statusCode, 201, write.body)
  t.ok(waited, 'the deletion waited for the write')
  t.equal(change.statusCode, 409, change.body)
  t.match(change.data.detail, /1 process instance\(s\) were started from template/)
})
