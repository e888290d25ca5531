import { byKeys } from '../db/by-keys.js'
import { sql, type RawBuilder } from '../db/kysely.js'
import type { DB } from '../db/connect.js'
import { isStatementTimeout } from '../db/errors.js'
import { addDays } from '../lib/calendar.js'
import { DATE_RUN_LOOK_BACK_DAYS, MAX_DAYS_OFFSET } from '../modules/autostart/schemas.js'

const DAY_MS = 86_400_000

/**
 * Removes finished data older than the retention, at most `limit` rows of each kind per call, each
 * kind found through a partial index over its finished rows (migrations 0007 and 0029); rows another
 * worker is removing are skipped. Returns how many rows went. The kinds:
 * - processes that ended, with their steps, deliveries, attempts and activities; not while the
 *   follow-up step that started one still waits for it, and not while a delivery
 *   of one is queued or in flight (a replay of it), which would go unsent or unrecorded: they are
 *   locked, then checked again and removed by a second statement, which sees a replay that committed
 *   meanwhile (a replay holds the process against the lock while it queues, and a provider's write-back
 *   with the claim of one of its calls while it logs its activity, records/repository.ts);
 * - finished deliveries of record triggers, with their attempts;
 * - the activities of records that belong to no process: a trigger call's outcome, its replay or
 *   recovery, a provider's write-back through it, the triggers a write did not fire. They are the
 *   record's side of the trigger deliveries, and go at the same age (a process's activities on the
 *   record go with the process);
 * - sent mails, and email steps' mails that were given up, once their step has heard of them;
 * - autostart runs. A run is also the key that starts a template once per occasion, so it goes only
 *   when no occasion can look for it again: a record's creation (`created`) or one of its versions
 *   (`changed:<version>`) happens once, since a record's id is never given again and its version
 *   only grows, and its run goes at the retention; a date's run (`date:<YYYY-MM-DD>`) may be looked
 *   for again by a template whose offset changed, or by a late pass catching up, until
 *   DATE_RUN_LOOK_BACK_DAYS after that date, and goes only once that is past too.
 */
export async function removeOldHistory(db: DB, now: Date, retentionDays: number, limit = 500, signal?: AbortSignal): Promise<number> {
  if (retentionDays <= 0) return 0
  const cutoff = new Date(now.getTime() - retentionDays * DAY_MS)
  // The processes go in removals of their own, each of at most BATCH_STEPS steps (the first process
  // whatever its steps) and within the statement timeout: a removal that timed out (a slower database,
  // a shorter timeout, many attempts or activities a step) is tried again with half as many processes,
  // down to one, and the call takes no more at once after it. One statement for all took up to 500
  // processes of a thousand steps each, timed out, and every pass picked the same ones again.
  let processes = 0
  let most = limit
  let asked = limit
  while (processes < limit && !signal?.aborted) {
    asked = Math.min(asked, most, limit - processes)
    let taking = asked
    let removal: { locked: number; kept: number; removed: number }
    try {
      removal = await db.transaction().execute(async (trx) => {
        const { rows: locked } = await oldProcessesLocked(cutoff, asked).execute(trx)
        const kept = withinSteps(locked, BATCH_STEPS)
        taking = kept.length
        if (kept.length === 0) return { locked: 0, kept: 0, removed: 0 }
        // Checked again by a statement of its own, which sees what committed before the lock: a replay
        // queued then (after it, a replay waits for its process, deliveries/service.ts, and finds it gone).
        const { rows: removed } = await sql<{ id: string }>`
          with old as (
            select p.tenant_id, p.id from process_instances p
            where ${byKeys('p', kept)}
              and not exists (select 1 from deliveries d where d.tenant_id = p.tenant_id and d.instance_id = p.id and d.status in ('pending', 'running'))
          ), their_activities as (
            delete from activities a using old o where a.tenant_id = o.tenant_id and a.instance_id = o.id
          )
          delete from process_instances p using old o where p.tenant_id = o.tenant_id and p.id = o.id
          returning p.id
        `.execute(trx)
        return { locked: locked.length, kept: kept.length, removed: removed.length }
      })
    } catch (error) {
      if (!isStatementTimeout(error) || taking <= 1) throw error
      most = asked = Math.ceil(taking / 2)
      continue
    }
    processes += removal.removed
    // None left, or none of these to remove now (a replay queued meanwhile).
    if (removal.removed === 0 || (removal.kept === removal.locked && removal.locked < asked)) break
    // Twice as many as went, to lock and count: no more after processes of many steps, more after small ones.
    asked = 2 * removal.kept
  }
  let removed = processes
  for (const rows of oldRowsOf(now, retentionDays)) removed += (await oldRowsRemoval(rows, limit).execute(db)).rows.length
  return removed
}

/**
 * Steps of the processes one removal takes at most: 20,000 steps, each with a delivery, an attempt and
 * two activities, went in 0.9 s.
 */
const BATCH_STEPS = 20_000

/**
 * Locks up to `limit` of the processes that ended before `cutoff`, oldest first, without a delivery
 * queued or in flight, skipping those others hold; with the number of steps of each. A follow-up's
 * process stays while its parent's step still waits for it (after a downtime longer than the
 * retention): removed first, the step would wait for a process that is gone, for good. A step that
 * has ended never runs again, so the lock's check is enough.
 */
export function oldProcessesLocked(cutoff: Date, limit: number): RawBuilder<{ tenant_id: string; id: string; steps: number }> {
  return sql<{ tenant_id: string; id: string; steps: number }>`
    select p.tenant_id, p.id,
      (select count(*)::int from instance_steps s where s.tenant_id = p.tenant_id and s.instance_id = p.id) as steps
    from process_instances p
    where p.status <> 'running' and p.ended_at < ${cutoff}
      and not exists (select 1 from deliveries d where d.tenant_id = p.tenant_id and d.instance_id = p.id
        and d.status in ('pending', 'running'))
      and not exists (select 1 from instance_steps f where f.tenant_id = p.tenant_id and f.id = p.parent_step_id
        and f.kind = 'followUpProcess' and f.state = 'running')
    order by p.ended_at
    limit ${limit}
    for update of p skip locked
  `
}

/** The first processes whose steps come to at most `steps` together, and the first one whatever its steps. */
function withinSteps<T extends { steps: number }>(processes: T[], steps: number): T[] {
  let total = 0
  const over = processes.findIndex((p) => (total += p.steps) > steps)
  return over === -1 ? processes : processes.slice(0, Math.max(1, over))
}

/** Old rows of one table: which, and in which order (that of the partial index that finds them). */
export interface OldRows {
  table: 'deliveries' | 'activities' | 'outbox_mails' | 'autostart_runs'
  old: RawBuilder<unknown>
  by: RawBuilder<unknown>
}

/** The old rows that go besides processes (removeOldHistory), one kind after the other. */
export function oldRowsOf(now: Date, retentionDays: number): OldRows[] {
  const cutoff = new Date(now.getTime() - retentionDays * DAY_MS)
  // Dates are compared as text: YYYY-MM-DD sorts as the dates do. A run is made at most
  // MAX_DAYS_OFFSET days (and a day for the tenant's zone) before its date, so a run older than the
  // retention is for a date before `madeBefore`: the index's range stops there, and a long retention
  // does not walk the date runs it keeps on every pass.
  const lookedFor = `date:${addDays(now.toISOString().slice(0, 10), -DATE_RUN_LOOK_BACK_DAYS)}`
  const madeBefore = `date:${addDays(cutoff.toISOString().slice(0, 10), MAX_DAYS_OFFSET + 2)}`
  const before = lookedFor < madeBefore ? lookedFor : madeBefore
  return [
    { table: 'deliveries', old: sql`step_id is null and status in ('succeeded', 'failed', 'cancelled') and finished_at < ${cutoff}`, by: sql`finished_at` },
    { table: 'activities', old: sql`instance_id is null and created_at < ${cutoff}`, by: sql`created_at` },
    // A mail its email step has not heard of yet (after a long downtime) stays until it has.
    { table: 'outbox_mails', old: sql`sent_at is not null and sent_at < ${cutoff} and not settle_step`, by: sql`sent_at` },
    // An email step's mail that was given up (migration 0010), once its step has heard of it.
    { table: 'outbox_mails', old: sql`failed_at is not null and failed_at < ${cutoff} and not settle_step`, by: sql`failed_at` },
    { table: 'autostart_runs', old: sql`occurrence not like 'date:%' and created_at < ${cutoff}`, by: sql`created_at` },
    { table: 'autostart_runs', old: sql`occurrence like 'date:%' and (occurrence collate "C") < ${before} and created_at < ${cutoff}`, by: sql`(occurrence collate "C")` }
  ]
}

/** Deletes up to `limit` of the old rows, in their order, skipping rows others hold; returns their ids. */
export function oldRowsRemoval({ table, old, by }: OldRows, limit: number): RawBuilder<{ id: string }> {
  return sql<{ id: string }>`
    with old as (
      select tenant_id, id from ${sql.table(table)}
      where ${old}
      order by ${by}
      limit ${limit}
      for update skip locked
    )
    delete from ${sql.table(table)} t using old o where t.tenant_id = o.tenant_id and t.id = o.id
    returning t.id
  `
}
