import { sql, type Insertable } from '../db/kysely.js'
import type { DB } from '../db/connect.js'
import type { DeliveryAttemptsTable, InstanceRow, InstanceStepRow } from '../db/database.js'
import type { ClaimedDelivery } from './claim-deliveries.js'
import type { Decision } from './retry-policy.js'
import { byKeys, eachKey } from '../db/by-keys.js'
import { runTogether } from '../db/statement.js'
import { rowsFrom, type Column } from '../db/json-rows.js'

interface Ref {
  tenant_id: string
  id: string
}

/**
 * Locks these processes in id order (so two batches never wait on each other in a circle): the keys
 * come sorted, and each row is locked as its lookup finds it.
 */
export function instancesLockedInOrder(refs: Ref[]) {
  return sql<InstanceRow>`
    select p.* from ${eachKey(refs)}
    cross join lateral (
      select * from process_instances x where x.tenant_id = k.tenant_id and x.id = k.id offset 0 for update
    ) p
    order by p.id
  `
}

/**
 * These steps and the step after each: a lookup of the primary key, then two of the step position
 * key, per step, whatever the statistics say. As a plain join, a planner that knows nothing of a
 * tenant's new steps hashes all of them instead (issue 9: a burst after a large history, not analyzed).
 */
export function stepsAndNext(refs: Ref[]) {
  return sql<InstanceStepRow>`
    select n.* from ${eachKey(refs)}
    cross join lateral (select * from instance_steps x where x.tenant_id = k.tenant_id and x.id = k.id offset 0) s
    cross join lateral (
      select * from instance_steps n
      where n.instance_id = s.instance_id and n.tenant_id = s.tenant_id and n.position in (s.position, s.position + 1)
      limit 2
    ) n
  `
}

interface Settlement {
  delivery: ClaimedDelivery
  decision: Decision
  statusCode: number | null
  error: string | null
}

export interface LockedAndSettled {
  /** The processes locked, by id. */
  instances: Map<string, InstanceRow>
  /**
   * The deliveries whose claim held, and which were settled: each id with the fence of that claim. A
   * batch may hold two outcomes of one delivery (a claim whose outcome waited past its lease, and the
   * same worker's claim of it after the reaper's): only the one presenting this fence counts.
   */
  settled: Map<string, number>
  /** The steps asked for, and the step after each (when there is one). */
  steps: InstanceStepRow[]
}

/**
 * Locks the processes `lockRefs` names (instancesLockedInOrder), then applies each decision where the
 * worker's claim (its fence) still holds, logs the attempts of exactly those deliveries, and reads
 * the steps `stepRefs` names with the step after each: two statements sent together in one round
 * trip (runTogether), between the start and the end of the transaction's lock wait (LOCK_WAIT,
 * LOCK_WAIT_OVER), or the second alone when there is nothing to lock (deliveries of record changes).
 * The second runs once the first has taken every lock, so in READ COMMITTED its snapshot shows these
 * processes' steps as they are. Its update may still wait for a delivery's row; whoever
 * held it (the reaper, a release, a replay) left that delivery no longer `running`, so it comes back
 * fenced and its step, read before the wait, is not used. The client's read timeout covers the round
 * trip, both waits together (src/db/postgres.ts, `pipelined`): a batch it cuts off is tried again.
 */
export async function lockAndSettle(
  db: DB, lockRefs: Ref[], settlements: Settlement[], attempts: FencedAttempt[], now: Date, stepRefs: Ref[]
): Promise<LockedAndSettled> {
  if (settlements.length === 0) return { instances: new Map(), settled: new Map(), steps: [] }
  const settle = settleStatement(settlements, attempts, now, stepRefs).compile(db)
  const statements = [
    LOCK_WAIT,
    ...[...(lockRefs.length > 0 ? [instancesLockedInOrder(lockRefs).compile(db)] : []), settle].map(({ sql: text, parameters }) => ({ text, values: parameters })),
    LOCK_WAIT_OVER
  ]
  const results = await runTogether(db, statements)
  const locked = (lockRefs.length > 0 ? results[1] : []) as InstanceRow[]
  const found = results[results.length - 2] as (InstanceStepRow & { settled_id: string | null; settled_fence: number | null })[]
  const settled = new Map<string, number>()
  const steps: InstanceStepRow[] = []
  for (const { settled_id: settledId, settled_fence: fence, ...step } of found) {
    if (settledId) settled.set(settledId, fence!)
    else steps.push(step)
  }
  return { instances: new Map(locked.map((r) => [r.id, r])), settled, steps }
}

/** The longest an outcome batch waits for a row lock, in ms (half the statement timeout, when that is shorter). */
export const OUTCOME_LOCK_WAIT_MS = 500

/**
 * The batch's transaction waits no longer than OUTCOME_LOCK_WAIT_MS for a row (SQLSTATE 55P03 then): a
 * row held elsewhere for long (a report's SELECT … FOR UPDATE of a few processes, an operator's
 * session left open) held every outcome of the batch behind its own, each try a statement timeout,
 * until their leases ran out and their calls were made again (a probe: 3 processes held 12 s, 16 calls
 * made twice). The batcher then writes them one by one (outcome-batcher.ts). Sent with the batch's
 * statements, in the same round trip.
 */
const LOCK_WAIT = {
  // The statement timeout as the session shows it ('10s', '500ms', '0'), read as an interval: pg_settings
  // builds every setting's row for each read (0.6 ms of Postgres's CPU a batch, against 0.03 ms).
  // The session's own lock timeout is kept aside (a subquery with a volatile target runs first) for LOCK_WAIT_OVER.
  text: `select set_config('lock_timeout',
    least($1::int, nullif(extract(epoch from current_setting('statement_timeout')::interval) * 1000, 0)::int / 2)::text, true)
    from (select set_config('baton.session_lock_timeout', current_setting('lock_timeout'), true)) kept`,
  values: [OUTCOME_LOCK_WAIT_MS]
}

/**
 * The lock wait ends with the rows an outsider may hold: the rest of the transaction (the changes, the COMMIT and
 * the lock a notifying COMMIT takes for the notification queue, which other transactions' commits hold in turn) waits
 * as the session's other statements do, within the statement timeout, rather than fail with 55P03 behind a slow disk
 * and send its batch down the one-by-one path. It gets the session's own lock timeout back (Baton's 0, or the
 * connection string's); a statement with a value, as a statement sent together must be (`canPipeline`), not RESET.
 */
const LOCK_WAIT_OVER = { text: `select set_config('lock_timeout', current_setting('baton.session_lock_timeout'), $1)`, values: [true] }

/** A delivery's new state as the settling writes it. */
interface SettledRow {
  tenant_id: string
  id: string
  fence: number
  status: 'succeeded' | 'pending' | 'failed'
  status_code: number | null
  error: string | null
  next_attempt_at: Date | null
  finished_at: Date | null
}

/** An attempt to log, with the fence of the claim that made it: logged only where that claim settled its delivery. */
export type FencedAttempt = Insertable<DeliveryAttemptsTable> & { fence: number }

/** The columns of the settlements and of the attempts, as the settling reads them (src/db/json-rows.ts). */
const SETTLEMENTS: Column<SettledRow>[] = [
  ['tenant_id', 'uuid'], ['id', 'uuid'], ['fence', 'integer'], ['status', 'text'], ['status_code', 'integer'], ['error', 'text'],
  ['next_attempt_at', 'timestamptz'], ['finished_at', 'timestamptz']
]
const ATTEMPTS: Column<FencedAttempt>[] = [
  ['tenant_id', 'uuid'], ['id', 'uuid'], ['delivery_id', 'uuid'], ['round', 'integer'], ['attempt_number', 'integer'], ['started_at', 'timestamptz'],
  ['duration_ms', 'integer'], ['outcome', 'text'], ['status_code', 'integer'], ['error', 'text'], ['response_body', 'text'], ['fence', 'integer']
]

/** Settles the deliveries and logs their attempts, answering the settled ids and the steps (lockAndSettle). */
function settleStatement(settlements: Settlement[], attempts: FencedAttempt[], now: Date, stepRefs: Ref[]) {
  const rows = settlements.map(({ delivery, decision, statusCode, error }): SettledRow => ({
    tenant_id: delivery.tenantId,
    id: delivery.id,
    fence: delivery.fence,
    status: decision.action === 'succeed' ? 'succeeded' : decision.action === 'retry' ? 'pending' : 'failed',
    status_code: statusCode,
    error: decision.action === 'give-up' ? error ?? decision.reason : error,
    next_attempt_at: decision.action === 'retry' ? new Date(now.getTime() + decision.delayMs) : null,
    finished_at: decision.action === 'retry' ? null : now
  }))
  return sql<InstanceStepRow & { settled_id: string | null; settled_fence: number | null }>`
    with settled as (
      update deliveries d
      set status = v.status, lease_owner = null, lease_expires_at = null, last_status_code = v.status_code, last_error = v.error,
          next_attempt_at = coalesce(v.next_attempt_at, d.next_attempt_at), finished_at = v.finished_at
      from ${rowsFrom(rows, SETTLEMENTS, 'v')}
      where ${byKeys('d', rows)} and d.tenant_id = v.tenant_id and d.id = v.id and d.fence = v.fence and d.status = 'running'
      returning d.tenant_id, d.id, d.fence
    ), logged as (
      insert into delivery_attempts (tenant_id, id, delivery_id, round, attempt_number, started_at, duration_ms, outcome, status_code, error, response_body)
      select a.tenant_id, a.id, a.delivery_id, a.round, a.attempt_number, a.started_at, a.duration_ms, a.outcome, a.status_code, a.error, a.response_body
      from ${rowsFrom(attempts, ATTEMPTS, 'a')}
      join settled s on s.tenant_id = a.tenant_id and s.id = a.delivery_id and s.fence = a.fence
    ), steps as (${stepsAndNext(stepRefs)})
    select n.*, null::uuid as settled_id, null::integer as settled_fence from steps n
    union all
    select (null::instance_steps).*, s.id, s.fence from settled s
  `
}

/**
 * Puts a claimed delivery back without counting an attempt: a worker shutting down releases it, and
 * so does a call that found no free slot at its host in time. It keeps the due time it was claimed
 * at, and so its place in the queue, unless `dueAt` puts it later. `targetHost`: a free target's host,
 * written where the delivery has none (one queued before migration 0022, or by a process older than
 * it), so that claims can leave it out from now on while the host is full.
 */
export async function releaseDelivery(
  db: DB, claim: { tenantId: string; id: string; stepId: string | null; fence: number },
  { dueAt, targetHost }: { dueAt?: Date | undefined; targetHost?: string | undefined } = {}
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const released = await trx.updateTable('deliveries')
      .set((eb) => ({
        status: 'pending', lease_owner: null, lease_expires_at: null, attempt_count: eb('attempt_count', '-', 1),
        ...(dueAt ? { next_attempt_at: dueAt } : {}),
        ...(targetHost ? { target_host: eb.fn.coalesce('target_host', eb.val(targetHost)) } : {})
      }))
      .where('tenant_id', '=', claim.tenantId).where('id', '=', claim.id).where('fence', '=', claim.fence).where('status', '=', 'running')
      .executeTakeFirst()
    if (released.numUpdatedRows > 0n && claim.stepId) {
      await trx.updateTable('instance_steps').set({ state: 'due' })
        .where('tenant_id', '=', claim.tenantId).where('id', '=', claim.stepId).where('state', '=', 'running').execute()
    }
  })
}

/**
 * Puts back, uncounted, the deliveries of a claim whose answer this worker never got (its connection
 * was lost, maybe after the commit): found by the worker and the claim's lease end, when no claim the
 * worker holds shares it (the scheduler's to know). None of them was called, as the worker never had
 * them; their steps turn due again. Returns how many went back.
 */
export async function releaseUnansweredClaim(db: DB, workerId: string, leaseUntil: Date): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const released = await trx.updateTable('deliveries')
      .set((eb) => ({ status: 'pending', lease_owner: null, lease_expires_at: null, attempt_count: eb('attempt_count', '-', 1) }))
      .where('status', '=', 'running').where('lease_owner', '=', workerId).where('lease_expires_at', '=', leaseUntil)
      .returning(['tenant_id', 'step_id'])
      .execute()
    const stepsByTenant = new Map<string, string[]>()
    for (const { tenant_id: tenantId, step_id: stepId } of released) {
      if (stepId !== null) stepsByTenant.set(tenantId, [...(stepsByTenant.get(tenantId) ?? []), stepId])
    }
    for (const [tenantId, stepIds] of stepsByTenant) {
      await trx.updateTable('instance_steps').set({ state: 'due' })
        .where('tenant_id', '=', tenantId).where('id', 'in', stepIds).where('state', '=', 'running').execute()
    }
    return released.length
  })
}

/**
 * Ends a claimed trigger delivery `cancelled` without a call (deliver.ts, withdrawnBecause), as the
 * request that withdrew it would have had it seen it: no attempt is logged and the claim's count of
 * attempts is taken back, so the delivery shows the calls that were made. Fenced as an outcome is:
 * false when the claim no longer holds.
 */
export async function cancelClaimedDelivery(
  db: DB, claim: { tenantId: string; id: string; fence: number }, reason: string, now: Date
): Promise<boolean> {
  const cancelled = await db.updateTable('deliveries')
    .set((eb) => ({
      status: 'cancelled', lease_owner: null, lease_expires_at: null, attempt_count: eb('attempt_count', '-', 1), last_error: reason, finished_at: now
    }))
    .where('tenant_id', '=', claim.tenantId).where('id', '=', claim.id).where('fence', '=', claim.fence).where('status', '=', 'running')
    .executeTakeFirst()
  return cancelled.numUpdatedRows > 0n
}

/** Each of these services' webhook URL as it is now (a worker holds a service back by the host it last called). */
export async function currentServiceUrls(db: DB, ids: string[]): Promise<{ id: string; webhookUrl: string }[]> {
  const { rows } = await sql<{ id: string; webhookUrl: string }>`
    select id, webhook_url as "webhookUrl" from marketplace_services where id = any(${ids}::uuid[])`.execute(db)
  return rows
}
