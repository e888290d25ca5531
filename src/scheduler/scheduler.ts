import type { Clock } from '../adapters/clock.js'
import type { HttpClient } from '../adapters/http-client.js'
import type { Mailer } from '../adapters/mailer.js'
import type { DB } from '../db/connect.js'
import { loadClaimKey } from '../modules/auth/claim-key.js'
import { once } from '../lib/once.js'
import type { SecretBox } from '../lib/secret-box.js'
import { claimDeliveries, type ClaimedDelivery } from './claim-deliveries.js'
import { deliver, type DeliverDeps } from './deliver.js'
import { releaseDelivery } from './delivery-repository.js'
import { HostSlotPool } from './host-slots.js'
import { nextDue } from './next-due.js'
import { reapExpiredLeases } from './reap-expired-leases.js'
import type { RetryPolicy } from './retry-policy.js'
import { sendQueuedMail } from './send-mail.js'
import { startDueSteps } from './start-due-steps.js'
import { sweepDeadlines } from './sweep-deadlines.js'

export interface SchedulerSettings {
  pollIntervalMs: number
  batchSize: number
  concurrency: number
  leaseMs: number
  timeoutMs: number
  mailFrom: string
  userAgent: string
  policy: RetryPolicy
  /** How long the apiClaim of a call stays valid. */
  claimTtlMs: number
  /** Calls open at once to one host:port across all workers (a slot lives at most a lease); unset: no limit. */
  perHostConcurrency?: number
}

export interface Logger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

export interface SchedulerDeps {
  db: DB
  clock: Clock
  http: HttpClient
  mailer: Mailer
  log: Logger
  workerId: string
  settings: SchedulerSettings
  /** The apiClaim key; by default the one kept in the database (see loadClaimKey). */
  claimKey?: () => Promise<Buffer>
  /** Opens sealed service secrets (BATON_SECRETS_KEY). */
  secrets?: SecretBox
  /** Subscribes to "new work" notifications (the payload names the table); returns the unsubscribe. */
  listen?: (onWork: (table?: string) => void) => Promise<() => Promise<void>>
}

export interface RunSummary {
  stepsStarted: number
  deliveries: number
  deadlines: number
  mails: number
  reaped: number
}

export interface Scheduler {
  /** Drains everything due now and returns what it did: for tests and one-off runs. */
  runOnce(): Promise<RunSummary>
  start(): Promise<void>
  /** Stops claiming, lets calls in flight finish within the grace period, releases the rest. */
  stop(graceMs: number): Promise<void>
  wake(): void
}

export function createScheduler(deps: SchedulerDeps): Scheduler {
  const { db, clock, settings } = deps
  const claimKey = deps.claimKey ?? once(() => loadClaimKey(db, undefined))
  const hostSlots = settings.perHostConcurrency === undefined ? undefined : new HostSlotPool(db, {
    perHost: settings.perHostConcurrency, ttlMs: settings.leaseMs, callMs: settings.timeoutMs, owner: deps.workerId
  }, (error) => deps.log.warn({ err: error }, 'freeing host slots failed; they expire with the lease'))
  const deliverDeps: DeliverDeps = {
    db, clock, http: deps.http, policy: settings.policy, timeoutMs: settings.timeoutMs, userAgent: settings.userAgent,
    claimKey, claimTtlMs: settings.claimTtlMs,
    ...(hostSlots ? { hostSlots } : {}),
    ...(deps.secrets ? { secrets: deps.secrets } : {})
  }
  const inFlight = new Map<string, { claim: ClaimedDelivery; abort: AbortController; done: Promise<unknown> }>()
  let stopping = false
  let loop: Promise<void> | undefined
  let unlisten: (() => Promise<void>) | undefined
  let wakeUp: (() => void) | undefined
  let choresWanted = true
  /** When the next chore falls due, as last read; a timer wake runs the chores only once it has come. */
  let nextChoresAt: number | undefined
  /** A wake-up (NOTIFY, a finished call) arrived since the pass began: the next sleep returns at once. */
  let woken = false

  /** New work was announced: claim at once, and run the chores unless it was only a new delivery. */
  const wake = (table?: string) => {
    if (table !== 'deliveries') choresWanted = true
    woken = true
    wakeUp?.()
  }

  /** Claims what is due, up to the free room; `full` when the claim filled its limit, so more may be due. */
  async function claimAndDispatch(): Promise<{ claimed: number; full: boolean }> {
    const room = settings.concurrency - inFlight.size
    if (room <= 0 || stopping) return { claimed: 0, full: false }
    const limit = Math.min(room, settings.batchSize)
    const claims = await claimDeliveries(db, { workerId: deps.workerId, now: clock.now(), leaseMs: settings.leaseMs, limit })
    for (const claim of claims) dispatch(claim)
    return { claimed: claims.length, full: claims.length === limit }
  }

  function dispatch(claim: ClaimedDelivery): void {
    const abort = new AbortController()
    const done = deliver(deliverDeps, claim, abort.signal)
      .catch(async (error: unknown) => {
        if (abort.signal.aborted) return releaseDelivery(db, claim, clock.now())
        deps.log.error({ err: error, deliveryId: claim.id }, 'recording a delivery failed; its lease will expire and it will be retried')
      })
      .finally(() => {
        // Only a worker that was full has a reason to claim now: otherwise it sleeps until the next due time.
        const wasFull = inFlight.size >= settings.concurrency
        inFlight.delete(claim.id)
        if (wasFull) {
          woken = true
          wakeUp?.()
        }
      })
    inFlight.set(claim.id, { claim, abort, done })
  }

  /** Each chore runs on its own: one that fails is logged and the others still run. */
  async function housekeeping(): Promise<Omit<RunSummary, 'deliveries'>> {
    const now = clock.now()
    const chore = async (name: string, work: () => Promise<number>): Promise<number> => {
      try {
        return await work()
      } catch (error) {
        deps.log.error({ err: error, chore: name }, 'scheduler chore failed; it runs again on the next pass')
        return 0
      }
    }
    const onError = (error: unknown, id: string) => deps.log.error({ err: error, id }, 'scheduler chore failed for one row; the others go on')
    const reaped = await chore('reapExpiredLeases', () => reapExpiredLeases(db, now))
    const stepsStarted = await chore('startDueSteps', () => startDueSteps(db, now, settings.batchSize, onError))
    const deadlines = await chore('sweepDeadlines', () => sweepDeadlines(db, now, settings.batchSize, onError))
    const mails = await chore('sendQueuedMail', () => sendMail(now))
    return { reaped, stepsStarted, deadlines, mails }
  }

  function sendMail(now: Date): Promise<number> {
    return sendQueuedMail(db, deps.mailer, { now, from: settings.mailFrom, limit: settings.batchSize, log: deps.log })
  }

  async function runOnce(): Promise<RunSummary> {
    const total: RunSummary = { stepsStarted: 0, deliveries: 0, deadlines: 0, mails: 0, reaped: 0 }
    for (;;) {
      const chores = await housekeeping()
      let deliveries = 0
      for (let claimed = (await claimAndDispatch()).claimed; claimed > 0 || inFlight.size > 0; claimed = (await claimAndDispatch()).claimed) {
        deliveries += claimed
        if (inFlight.size > 0) await Promise.race([...inFlight.values()].map((f) => f.done))
      }
      const mails = deliveries > 0 ? await sendMail(clock.now()) : 0
      const pass = { ...chores, deliveries, mails: chores.mails + mails }
      for (const key of Object.keys(total) as (keyof RunSummary)[]) total[key] += pass[key]
      if (Object.values(pass).every((n) => n === 0)) return total
    }
  }

  async function run(): Promise<void> {
    let lastChores = 0
    while (!stopping) {
      try {
        woken = false
        const { full } = await claimAndDispatch()
        const now = clock.now().getTime()
        if (nextChoresAt !== undefined && nextChoresAt <= now) choresWanted = true
        if (choresWanted || now - lastChores >= settings.pollIntervalMs) {
          choresWanted = false
          lastChores = now
          const chores = await housekeeping()
          if (Object.values(chores).some((n) => n > 0)) {
            choresWanted = true
            continue
          }
        }
        // A full claim may have left more due; a short one took all that was due then.
        if (full && inFlight.size < settings.concurrency) continue
        await sleep(await idleMs())
      } catch (error) {
        deps.log.error({ err: error }, 'scheduler pass failed; retrying shortly')
        await sleep(settings.pollIntervalMs)
      }
    }
  }

  /** Until the next known due time, at most a poll interval; a NOTIFY or a finished call wakes earlier. */
  async function idleMs(): Promise<number> {
    if (inFlight.size >= settings.concurrency) return settings.pollIntervalMs
    const due = await nextDue(db)
    nextChoresAt = due.chores?.getTime()
    const next = [due.delivery, due.chores].filter((d) => d !== undefined).sort((a, b) => a.getTime() - b.getTime())[0]
    const untilNext = next ? next.getTime() - clock.now().getTime() : settings.pollIntervalMs
    return Math.max(0, Math.min(settings.pollIntervalMs, untilNext))
  }

  function sleep(ms: number): Promise<void> {
    if (ms <= 0 || stopping || woken) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms)
      function done() {
        clearTimeout(timer)
        wakeUp = undefined
        resolve()
      }
      wakeUp = done
    })
  }

  return {
    runOnce,
    wake,
    async start() {
      if (deps.listen) unlisten = await deps.listen(wake)
      stopping = false
      loop = run()
    },
    async stop(graceMs) {
      stopping = true
      wake()
      await loop
      await unlisten?.()
      const pending = [...inFlight.values()]
      const graceOver = new Promise((resolve) => setTimeout(resolve, graceMs).unref())
      await Promise.race([Promise.all(pending.map((f) => f.done)), graceOver])
      for (const flight of inFlight.values()) flight.abort.abort()
      await Promise.all([...inFlight.values()].map((f) => f.done))
      await hostSlots?.close()
    }
  }
}
