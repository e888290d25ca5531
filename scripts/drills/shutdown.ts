// shutdown: a worker gets SIGTERM with calls in flight, half of them slower than its grace and half
// faster. Promise: it exits 0, claims nothing after the signal, leaves nothing leased, and every
// call that left is in the attempt log (the fast ones succeeded, the slow ones aborted); a second
// worker then finishes the rest, each call repeated at most once, with the same Idempotency-Key.
import { sql } from '../../src/db/kysely.js'
import { TestProvider } from '../../test/helpers/provider.js'
import {
  atMost, batonEnv, callsAndAttempts, Cluster, createDrillDatabase, deliveryStatuses, freePort, info, report, setupTenant, waitFor
} from './harness.js'

export interface ShutdownOptions {
  processes: number
  graceMs: number
  label: string
}

export const SHUTDOWN_FULL: ShutdownOptions = { processes: 200, graceMs: 3000, label: 'full' }
export const SHUTDOWN_SHORT: ShutdownOptions = { processes: 40, graceMs: 1500, label: 'short' }

export async function shutdownDrill(options: ShutdownOptions): Promise<boolean> {
  const database = await createDrillDatabase()
  const provider = await TestProvider.start()
  const cluster = new Cluster({
    ...batonEnv(database.url),
    SHUTDOWN_GRACE_MS: String(options.graceMs),
    SCHEDULER_CONCURRENCY: String(options.processes),
    WEBHOOK_PER_HOST_CONCURRENCY: String(options.processes),
    WEBHOOK_TIMEOUT_MS: String(options.graceMs * 4),
    SCHEDULER_LEASE_MS: String(options.graceMs * 8)
  })
  await cluster.init()
  try {
    const db = database.handle.db
    // Every claim, with the worker and the database's time: none may come after the signal.
    await sql`create table drill_claims (delivery_id uuid not null, owner text not null, at timestamptz not null default clock_timestamp())`.execute(db)
    await sql.raw(`create function drill_log_claim() returns trigger language plpgsql as $$
      begin insert into drill_claims (delivery_id, owner) values (new.id, new.lease_owner); return null; end $$`).execute(db)
    await sql.raw(`create trigger drill_claims_log after update of lease_owner on deliveries
      for each row when (new.lease_owner is not null) execute function drill_log_claim()`).execute(db)

    const port = await freePort()
    await cluster.api(port)
    const tenant = await setupTenant(`http://127.0.0.1:${port}`, provider)
    const templateId = await tenant.template([{ kind: 'webhook', name: 'Ask the slow provider' }])
    // Every other call takes four graces; the rest a fifth of one.
    let arrivals = 0
    let slow = true
    provider.always(() => ({ status: 200, body: 'ok', delayMs: slow && arrivals++ % 2 === 0 ? options.graceMs * 4 : options.graceMs / 5 }))
    for (let i = 0; i < options.processes; i++) await tenant.start(templateId)

    const first = await cluster.worker('worker-a')
    await waitFor(async () => provider.calls.length >= options.processes, 60_000, 20)
    const { rows: [signalled] } = await sql<{ at: Date }>`select clock_timestamp() as at`.execute(db)
    first.process.child.kill('SIGTERM')
    const code = await first.process.exited
    const stoppedIn = Date.now() - signalled!.at.getTime()
    const callsByA = provider.calls.length

    const { rows: [late] } = await sql<{ n: number }>`select count(*)::int as n from drill_claims where owner = 'worker-a' and at > ${signalled!.at}`.execute(db)
    const { rows: [leased] } = await sql<{ n: number }>`select count(*)::int as n from deliveries where status = 'running'`.execute(db)
    const afterA = await callsAndAttempts(db, provider)
    const outcomesA = [...afterA.values()].flatMap((d) => d.attempts)
    const unloggedA = [...afterA.values()].reduce((n, d) => n + Math.max(0, d.calls - d.attempts.length), 0)

    slow = false
    await cluster.worker('worker-b')
    await waitFor(async () => (await deliveryStatuses(db)).succeeded === options.processes, 60_000, 100)
    const statuses = await deliveryStatuses(db)
    let repeated = 0
    let unlogged = 0
    for (const { calls, attempts } of (await callsAndAttempts(db, provider)).values()) {
      unlogged += Math.max(0, calls - attempts.length)
      repeated += Math.max(0, calls - 1 - attempts.filter((a) => a === 'aborted').length)
    }
    const keys = provider.calls.every((c) => c.headers['idempotency-key'] === c.query.deliveryId)

    return report(`drill shutdown (${options.label}): SIGTERM to a worker with ${options.processes} calls in flight, half slower than its ${options.graceMs} ms grace`, [
      info('calls in flight at the signal', callsByA),
      atMost('worker exit code', code ?? 128, 0),
      info('time from signal to exit', `${stoppedIn} ms`),
      atMost('claims after the signal', late!.n, 0),
      atMost('deliveries left leased', leased!.n, 0),
      info('calls finished within the grace', outcomesA.filter((o) => o === 'succeeded').length),
      info('calls cut off (aborted attempts)', outcomesA.filter((o) => o === 'aborted').length),
      atMost('calls missing from the attempt log at exit', unloggedA, 0),
      atMost('calls missing from the attempt log at the end', unlogged, 0),
      atMost('deliveries not succeeded at the end', options.processes - (statuses.succeeded ?? 0), 0),
      atMost('repeats beyond the cut-off calls', repeated, 0),
      atMost('calls without their delivery as Idempotency-Key', keys ? 0 : 1, 0)
    ])
  } catch (error) {
    process.stderr.write(`${cluster.logs()}\n`)
    throw error
  } finally {
    await cluster.close()
    await provider.close()
    await database.drop()
  }
}
