// kill: three workers and the API on one Postgres; processes are started through the API at a steady
// rate while a random worker is killed with SIGKILL every few seconds and replaced. Promise: nothing
// lost or stuck, a call repeated only when its worker died with it in flight, and each killed claim
// taken over within the lease plus 5 s.
import type { DatabaseHandle } from '../../src/db/connect.js'
import { sql } from '../../src/db/kysely.js'
import { TestProvider } from '../../test/helpers/provider.js'
import {
  atMost, batonEnv, callsAndAttempts, Cluster, createDrillDatabase, deliveryStatuses, freePort, info, report, setupTenant, sleep, waitFor,
  type Baton
} from './harness.js'

export interface KillOptions {
  instances: number
  /** Starts per second through the API. */
  rate: number
  killEveryMs: [number, number]
  leaseMs: number
  label: string
}

export const KILL_FULL: KillOptions = { instances: 5000, rate: 80, killEveryMs: [5000, 20_000], leaseMs: 10_000, label: 'full' }
export const KILL_SHORT: KillOptions = { instances: 600, rate: 40, killEveryMs: [2500, 5000], leaseMs: 5000, label: 'short' }

interface Kill {
  at: number
  victim: string
  /** Deliveries the victim held when it died. */
  held: string[]
}

export async function killDrill(options: KillOptions): Promise<boolean> {
  const database = await createDrillDatabase()
  const provider = await TestProvider.start()
  provider.always({ status: 200, body: 'ok', delayMs: 20 })
  const cluster = new Cluster({
    ...batonEnv(database.url),
    SCHEDULER_LEASE_MS: String(options.leaseMs),
    WEBHOOK_TIMEOUT_MS: String(Math.floor(options.leaseMs / 2)),
    SCHEDULER_POLL_INTERVAL_MS: '500'
  })
  await cluster.init()
  try {
    const port = await freePort()
    await cluster.api(port)
    const tenant = await setupTenant(`http://127.0.0.1:${port}`, provider)
    const templateId = await tenant.template([{ kind: 'webhook', name: 'Re-value the property' }])
    let serial = 3
    // Live workers; a victim's replacement joins once it has started.
    const workers = await Promise.all([1, 2, 3].map((i) => cluster.worker(`worker-${i}`)))
    const replacements: Promise<unknown>[] = []

    const began = Date.now()
    const answers: { status: number; id?: string }[] = []
    let next = 0
    const loading = Promise.all(Array.from({ length: 8 }, async () => {
      while (next < options.instances) {
        const index = next++
        await sleep(began + (index * 1000) / options.rate - Date.now())
        answers.push(await tenant.start(templateId))
      }
    }))

    const kills: Kill[] = []
    const stopped = new Set<Baton>()
    let loadDone = false
    void loading.then(() => { loadDone = true })
    const [min, max] = options.killEveryMs
    while (!loadDone) {
      await Promise.race([sleep(min + Math.random() * (max - min)), loading])
      if (loadDone) break
      // The promise is another worker's takeover: the last live one is not killed while its replacements
      // start (several seconds on a busy machine), or no worker is there to take anything over.
      if (workers.length < 2) continue
      const victim = workers.splice(Math.floor(Math.random() * workers.length), 1)[0]!
      stopped.add(victim)
      victim.process.child.kill('SIGKILL')
      await victim.process.exited
      const at = Date.now()
      // A COMMIT the victim sent just before it died still lands once its server process reads it: what it
      // held is read once its connections (named after it, PGAPPNAME) are gone, or a claim it settled in its
      // last instant counts as held, and as never taken over.
      await waitFor(async () => {
        const { rows: left } = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where application_name = ${victim.name}`.execute(database.handle.db)
        return left[0]!.n === 0
      }, 10_000, 20)
      const { rows } = await sql<{ id: string }>`select id from deliveries where status = 'running' and lease_owner = ${victim.name}`.execute(database.handle.db)
      kills.push({ at, victim: victim.name, held: rows.map((r) => r.id) })
      replacements.push(cluster.worker(`worker-${++serial}`).then((w) => workers.push(w)))
    }
    await loading
    await Promise.all(replacements)
    const loadedAt = Date.now()
    const lastKill = kills.at(-1)?.at ?? loadedAt
    await waitFor(async () => {
      const statuses = await deliveryStatuses(database.handle.db)
      return (statuses.pending ?? 0) + (statuses.running ?? 0) === 0 && (statuses.succeeded ?? 0) >= answers.filter((a) => a.status === 201).length
    }, options.leaseMs + 60_000, 200)
    const recoveredMs = Date.now() - lastKill

    const created = answers.filter((a) => a.status === 201).map((a) => a.id!)
    const { rows: existing } = await sql<{ id: string }>`select id from process_instances`.execute(database.handle.db)
    const existingIds = new Set(existing.map((r) => r.id))
    const statuses = await deliveryStatuses(database.handle.db)
    const perDelivery = await callsAndAttempts(database.handle.db, provider)
    const heldAtKills = new Set(kills.flatMap((k) => k.held))
    let unlogged = 0
    let repeatedBeyondCrash = 0
    let recalled = 0
    let recalledNotInFlight = 0
    let succeededUncalled = 0
    for (const [id, { calls, attempts }] of perDelivery) {
      unlogged += Math.max(0, calls - attempts.length)
      repeatedBeyondCrash += Math.max(0, calls - 1 - attempts.filter((a) => a === 'aborted').length)
      if (calls > 1) recalled += 1
      if (calls > 1 && !heldAtKills.has(id)) recalledNotInFlight += 1
      if (calls === 0 && attempts.includes('succeeded')) succeededUncalled += 1
    }
    const takeovers = kills.flatMap((kill) => kill.held.map((id) => takenOverAt(provider, kills, kill, id).at - kill.at))
    const slowestTakeover = takeovers.length === 0 ? 0 : Math.max(...takeovers)
    const slowest = await slowestTakeoverSplit(database.handle.db, provider, kills)
    // Each claim raises a delivery's fence and ends as one attempt (a call, or the reaper's abort) or a release without one.
    const { rows: [claimed] } = await sql<{ claims: number; attempts: number }>`
      select (select coalesce(sum(fence), 0)::int from deliveries) as claims, (select count(*)::int from delivery_attempts) as attempts
    `.execute(database.handle.db)
    const exits = cluster.unexpectedExits(stopped)

    return report(`drill kill (${options.label}): 3 workers + API, ${options.instances} processes at ${options.rate}/s, SIGKILL every ${min / 1000}-${max / 1000} s, lease ${options.leaseMs / 1000} s`, [
      info('processes started (201)', created.length),
      atMost('starts not answered 201', answers.length - created.length, 0),
      info('workers killed', kills.length),
      info('claims held at a kill', heldAtKills.size),
      info('calls made', provider.calls.length),
      atMost('lost (201 but missing, or done uncalled)', created.filter((id) => !existingIds.has(id)).length + succeededUncalled, 0),
      atMost('stuck (not succeeded at the end)', (statuses.pending ?? 0) + (statuses.running ?? 0) + (statuses.failed ?? 0), 0),
      atMost('calls missing from the attempt log', unlogged, 0),
      atMost('duplicated (repeats beyond a crash)', repeatedBeyondCrash, 0),
      info('re-called after a crash', recalled),
      atMost('re-called but not in flight at a kill', recalledNotInFlight, 0),
      atMost('slowest takeover of a killed claim', Math.round(slowestTakeover), options.leaseMs + 5000, ' ms'),
      info('slowest takeover: reaped, then called', slowest),
      info('claims given back without an attempt', claimed!.claims - claimed!.attempts),
      info('time to recover after the last kill', `${recoveredMs} ms`),
      atMost('processes that exited on their own', exits.length, 0)
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

/**
 * When a claim held at this kill was taken over: its next call, or the kill of the next worker that took
 * it, if that came first (kills closer together than the lease: that worker died holding it before it
 * called, and the next takeover is that kill's own). From the first kill to the call, such a chain counted
 * every lease in it against one.
 */
function takenOverAt(provider: TestProvider, kills: Kill[], kill: Kill, id: string): { at: number; by: string } {
  const called = provider.calls.find((c) => c.query.deliveryId === id && c.at > kill.at)?.at ?? Infinity
  const heldAgain = kills.find((k) => k.at > kill.at && k.victim !== kill.victim && k.held.includes(id))?.at ?? Infinity
  return heldAgain < called ? { at: heldAgain, by: 'the kill of the worker that took it over' } : { at: called, by: 'the call' }
}

/**
 * Where the slowest takeover's time went: from the kill to the reaper's aborted attempt (the lease
 * running out, then a chores pass), and from there to the next call (a claim, a host slot).
 */
async function slowestTakeoverSplit(db: DatabaseHandle['db'], provider: TestProvider, kills: Kill[]): Promise<string> {
  let slowest: { id: string; kill: Kill; calledAt: number; by: string } | undefined
  for (const kill of kills) {
    for (const id of kill.held) {
      const { at: calledAt, by } = takenOverAt(provider, kills, kill, id)
      if (!slowest || calledAt - kill.at > slowest.calledAt - slowest.kill.at) slowest = { id, kill, calledAt, by }
    }
  }
  if (!slowest) return 'no claim was held at a kill'
  // Each claim raises the fence: claims after the reap beyond the one that called were released uncounted (no host slot in time).
  const { rows } = await sql<{ reaped_at: Date | null; fence: number }>`
    select (select min(started_at) from delivery_attempts where delivery_id = d.id and outcome = 'aborted') as reaped_at, d.fence
    from deliveries d where d.id = ${slowest.id}
  `.execute(db)
  const reapedAt = rows[0]?.reaped_at?.getTime()
  if (reapedAt === undefined) return `${slowest.id}: no aborted attempt logged`
  return `${reapedAt - slowest.kill.at} ms after the kill, then ${slowest.calledAt - reapedAt} ms to ${slowest.by} (${rows[0]!.fence} claims in all)`
}
