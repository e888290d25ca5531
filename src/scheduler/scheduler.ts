import { setMaxListeners } from 'node:events'
import type { Clock } from '../adapters/clock.js'
import type { HttpClient } from '../adapters/http-client.js'
import type { Mailer } from '../adapters/mailer.js'
import type { DB, Session } from '../db/connect.js'
import { isDatabaseUnavailable, isTransientDatabaseError, unavailableReason } from '../db/errors.js'
import { backoffMs, DATABASE_BACKOFF } from '../lib/backoff.js'
import { loadClaimKey } from '../modules/auth/claim-key.js'
import type { Logger } from '../lib/logger.js'
import { BatonMetrics } from '../lib/metrics.js'
import { once } from '../lib/once.js'
import type { SecretBox } from '../lib/secret-box.js'
import { throttled } from '../lib/throttled.js'
import { claimDeliveries, type ClaimedDelivery, type ClaimOptions } from './claim-deliveries.js'
import { currentServiceUrls, releaseUnansweredClaim } from './delivery-repository.js'
import { deliver, type CallPlace, type DeliverDeps } from './deliver.js'
import { hostKey } from '../lib/host-key.js'
import { HostSlots } from './host-slots.js'
import { nextDue } from './next-due.js'
import { RecentlyShort } from './recently-short.js'
import { OutcomeBatcher } from './outcome-batcher.js'
import { reapExpiredLeases, takeOverLeftClaims } from './reap-expired-leases.js'
import { removeOldHistory } from './remove-old-history.js'
import { finishTenantDeletions } from './finish-tenant-deletions.js'
import type { RowErrorHandler } from './isolated.js'
import type { RetryPolicy } from './retry-policy.js'
import { mailServerState, sendQueuedMail, type MailPass } from './send-mail.js'
import { startDueSteps } from './start-due-steps.js'
import { endFollowUps } from './automatic-steps/end-follow-ups.js'
import { autostartOnDates } from '../modules/autostart/service.js'
import { runAutomaticSteps } from './automatic-steps/run-automatic-steps.js'
import { sweepDeadlines } from './sweep-deadlines.js'
import { localShortages } from './local-shortage.js'

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
  /** Calls open at once to one host:port across all workers; unset (or no `session`): no limit. */
  perHostConcurrency?: number
  /** Days finished processes, deliveries and sent mails are kept (removeOldHistory); 0 or unset keeps all. */
  retentionDays?: number
}

/** A host full at this worker: its services, and the places left in its line. */
interface Line {
  host: string
  services: string[]
  places: number
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
  /** A connection of the worker's own, which holds its per-host slots as advisory locks. */
  session?: () => Promise<Session>
  /** Subscribes to "new work" notifications (the payload names the table); returns the unsubscribe. */
  listen?: (onWork: (table?: string) => void) => Promise<() => Promise<void>>
  /** The process's metrics, which /metrics shows; by default a registry of the scheduler's own. */
  metrics?: BatonMetrics
  /**
   * No other worker can run on this database (the embedded one, which one process holds): at its start
   * the worker takes back every claim left, without waiting for their leases to end (takeOverLeftClaims).
   */
  soleWorker?: boolean
}

interface RunSummary {
  stepsStarted: number
  /** Automatic steps carried out (an e-mail queued, values written, a decision taken, a follow-up started). */
  automaticSteps: number
  /** Autostart runs of templates whose date came (started or skipped), src/modules/autostart. */
  autostarts: number
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

const DUE_REREAD_MS = 200
/**
 * How many outcomes may wait to be written, as a multiple of SCHEDULER_CONCURRENCY, before fewer
 * calls start. While the outcome writer is busy, calls go on and its next batch grows: a burst
 * drained 4–10 % faster with 3 than with 1, and a database that writes too slowly still holds the
 * calls back.
 */
const OUTCOMES_WAITING_PER_CALL = 3
/**
 * Calls that may wait at a worker for a full host's slot, per place of SCHEDULER_CONCURRENCY (each
 * holds its delivery's lease). At one per place, the calls waiting for four hosts that hung filled the
 * line at two workers of eight places, and a host that answered got its calls made only when one found
 * a slot free at once: 300 calls in 19.6–23.2 s, against 3.3 s at four per place (`npm run drill -- hang`).
 */
const WAITING_PER_PLACE = 4

/**
 * The worker's stop signal, which every call waiting for its host's slot or for a place listens on:
 * up to SCHEDULER_CONCURRENCY × WAITING_PER_PLACE at once, each removed when its wait ends. Node warned
 * of an EventTarget "memory leak" past ten, which the defaults (8 per host, 64 places) reached with
 * two hosts full.
 */
function stopController(): AbortController {
  const controller = new AbortController()
  setMaxListeners(0, controller.signal)
  return controller
}

const RECLAIM_FLOOR_MS = 50
/**
 * How long a full host is not claimed apart after such a claim came back short, while
 * calls are in flight: it read every due delivery, the others' too, and the host is full anyway.
 */
const APART_REST_MS = 200
/** How often, at most, a worker reads again the URLs of the services it holds back behind a full host. */
const HELD_SERVICES_REREAD_MS = 1000
/** The reads of the held services' URLs are timed on a timer that only goes forward: on the wall clock, a step back put them off as long as the step. */
const elapsed = () => performance.now()
const RETENTION_EVERY_MS = 600_000
const DATE_CHECK_EVERY_MS = 600_000
/** A date check that failed (the database away a moment) is tried again this soon, not a full interval later. */
const DATE_CHECK_RETRY_MS = 60_000
const RETENTION_BATCH = 500
/** How often a worker looks for tenants whose deletion was cut off (finishTenantDeletions). */
const DELETIONS_EVERY_MS = 60_000
/** How long a worker leaves out a tenant whose deletion failed on its own before it tries again. */
const DELETION_RETRY_MS = 3_600_000

/**
 * How long a stop waits past its grace for what it still has the database do (its last claim and chores,
 * the outcomes of the calls it cut off): within the process's hard limit (grace + 5 s), with room left
 * for the database's close.
 */
const CUT_OFF_WRITES_MS = 2000

/** Mails one pump batch sends before it looks whether the worker is stopping. */
const MAIL_PUMP_BATCH = 10

export function createScheduler(deps: SchedulerDeps): Scheduler {
  const { db, clock, settings } = deps
  const metrics = deps.metrics ?? new BatonMetrics()
  const claimKey = deps.claimKey ?? once(() => loadClaimKey(db, undefined))
  const hostSlots = settings.perHostConcurrency === undefined || !deps.session ? undefined
    : new HostSlots(deps.session, settings.perHostConcurrency, throttled((error) => deps.log.warn({ err: error }, `per-host slots: ${unavailableReason(error)}`)),
      settings.concurrency * WAITING_PER_PLACE)
  const choreUnavailable = throttled((context: { err: unknown; chore: string }) =>
    deps.log.warn(context, `scheduler chore: ${unavailableReason(context.err)}; it runs again on the next pass`))
  /**
   * A chore's failure: the database away is a warning at most every few seconds, a collision with another
   * transaction (a deadlock, a serialization failure: a newer version's migrations, say) a warning, the
   * rest an error.
   */
  const choreFailed = (error: unknown, chore: string, then: string) => {
    if (isDatabaseUnavailable(error)) choreUnavailable({ err: error, chore })
    else if (isTransientDatabaseError(error)) deps.log.warn({ err: error, chore }, `scheduler chore collided with another transaction; ${then}`)
    else deps.log.error({ err: error, chore }, `scheduler chore failed; ${then}`)
  }
  /** The host of each service this worker has claimed, to claim a full host's services apart (claimAndDispatch). */
  const hostOfService = new Map<string, string>()
  /** When the URLs of the services held back were last read (elapsed()): not again for HELD_SERVICES_REREAD_MS. */
  let heldServicesReadAt = -Infinity
  /** Hosts whose claim apart came back short: not again for APART_REST_MS. */
  const recentlyShort = new RecentlyShort(APART_REST_MS)
  const outcomes = new OutcomeBatcher(db, clock, settings.batchSize)
  const shortages = localShortages(deps.log, clock)
  const deliverDeps: DeliverDeps = {
    db, clock, http: deps.http, policy: settings.policy, timeoutMs: settings.timeoutMs, userAgent: settings.userAgent,
    claimKey, claimTtlMs: settings.claimTtlMs, outcomes, metrics, log: deps.log, shortages,
    ...(hostSlots ? { hostSlots } : {}),
    ...(deps.secrets ? { secrets: deps.secrets } : {})
  }
  /**
   * Calls claimed and not ended: `called` settles when the call has ended. Each call is its own entry: a
   * delivery claimed again while its first call hung past its lease has two, and stop() ends both.
   */
  const inFlight = new Set<{ claim: ClaimedDelivery; abort: AbortController; called: Promise<void> }>()
  /**
   * Places of SCHEDULER_CONCURRENCY taken: by calls being made or about to be. A call waiting for its
   * host's slot gives its place back meanwhile (callPlace), so hosts that hang until the timeout do
   * not fill a worker with calls waiting for them.
   */
  let placesTaken = 0
  /** Calls that have their host's slot and wait for a place: each takes the next one that comes free, before any claim. */
  const placeLine: (() => void)[] = []
  /** Places the claim under way counts on (claimAndDispatch): not given to the line meanwhile. */
  let claiming = 0
  /**
   * Deliveries whose call ended and whose outcome is being written. The call's place is free by then:
   * the next call does not wait for a database round trip (group commit writes the outcomes).
   */
  const recording = new Set<Promise<void>>()
  /**
   * The lease ends of claims that failed without an answer: their commit may have happened all the same,
   * leaving deliveries leased to this worker that it never had. They go back at the next pass that
   * reaches the database, or at stop() (takeBackUnansweredClaims), not when their lease ends, when the
   * reaper would have counted an attempt for a call never made.
   */
  const unansweredClaims: Date[] = []
  /** The lease ends of the claims this worker dispatched, until they pass: rows leased till then may be its own. */
  const dispatchedLeaseEnds = new Set<number>()
  /** When the last reap of expired leases began: a lease that ended before was its to take (nextDue). */
  let leasesReapedTo = new Date(0)
  let stopping = false
  /** Fires when stop() begins: calls not yet made (waiting for a host slot, or for a place) are released at once. */
  let stopSignal = stopController()
  /** Fires when a stop's grace is over: the mail batch in flight stops waiting for the database to mark what it sent. */
  let graceOverSignal = new AbortController()
  /** The last claim left full hosts out, or took no more for them than their lines had places for: a finished call may make room. */
  let heldBack = false
  let loop: Promise<void> | undefined
  let unlisten: (() => Promise<void>) | undefined
  let wakeUp: (() => void) | undefined
  let choresWanted = true
  let nextDateCheckAt = 0
  /** When the dates were last checked: a clock stepped back behind it checks them again at once, not once it is back there. */
  let datesCheckedAt = 0
  /** When the next chore falls due, as last read; a timer wake runs the chores only once it has come. */
  let nextChoresAt: number | undefined
  /** A wake-up (NOTIFY, a finished call) arrived since the pass began: the next sleep returns at once. */
  let woken = false
  /** Steps were announced since the due times were last read: they are read again once the last reading is stale (idleMs). */
  let stepsAnnounced = false

  /**
   * New work was announced: a delivery is claimed at once, a mail is sent, and a step that now waits
   * only moves the next wake-up earlier (the loop reads the next due time after each pass). Without
   * a table (a reconnected LISTEN, which missed what was said meanwhile) the chores run too.
   */
  const wake = (table?: string) => {
    if (table === 'outbox_mails') return pumpMail()
    if (table === undefined) choresWanted = true
    if (table === 'instance_steps') stepsAnnounced = true
    woken = true
    wakeUp?.()
  }

  /** Places for claims: none of those the place line waits for. */
  function roomForCalls(): number {
    return settings.concurrency - placesTaken - placeLine.length - Math.max(0, unwrittenOutcomes() - settings.concurrency * OUTCOMES_WAITING_PER_CALL)
  }

  /** Free places go to the calls in the place line first, the longest waiting first. */
  function servePlaceLine(): void {
    while (placeLine.length > 0 && placesTaken + claiming < settings.concurrency) {
      placesTaken += 1
      placeLine.shift()!()
    }
  }

  /**
   * A call's place, held from its dispatch. It is given back while the call waits for its host's slot
   * and taken again once the call has the slot: at once when a place is free and no call waits for one,
   * or else the next that comes free, before any new claim: when freed places went to new claims first,
   * a call that had its slot waited behind up to 70 newer calls, 84–1,397 ms (in a probe).
   */
  function callPlace(): CallPlace {
    placesTaken += 1
    let placed = true
    const leave = () => {
      if (!placed) return
      // Only a worker that was full, or left crowded hosts out, has a reason to claim now: otherwise
      // it sleeps until the next due time.
      const wasFull = roomForCalls() <= 0
      placed = false
      placesTaken -= 1
      servePlaceLine()
      if (wasFull || heldBack) {
        woken = true
        wakeUp?.()
      }
    }
    const take = (maxWaitMs: number, signal?: AbortSignal) => new Promise<boolean>((resolve) => {
      if (signal?.aborted) return resolve(false)
      const settle = (taken: boolean) => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', giveUp)
        placed = taken
        resolve(taken)
      }
      const given = () => settle(true)
      const giveUp = () => {
        const waiting = placeLine.indexOf(given)
        if (waiting !== -1) placeLine.splice(waiting, 1)
        settle(false)
      }
      const timer = setTimeout(giveUp, maxWaitMs)
      signal?.addEventListener('abort', giveUp, { once: true })
      placeLine.push(given)
      servePlaceLine()
    })
    return { leave, take }
  }

  /**
   * Claims up to the free room. The services and free targets of hosts that are full at this worker
   * (HostSlots.placesAt) are left out of the main claim and claimed apart, host by host, no more than
   * each line has places for; `full` when the main claim filled its limit, so more may be due.
   */
  async function claimAndDispatch(): Promise<{ claimed: number; full: boolean }> {
    // The last claim's calls reach their host's line first, so its places are counted with them.
    if (hostSlots) await new Promise<void>((resolve) => setImmediate(resolve))
    // Before the room is read: a worker whose places are all taken still gives back what it never had.
    await takeBackUnansweredClaims(clock.now())
    if (roomForCalls() <= 0 || stopping) return { claimed: 0, full: false }
    // A call just failed to open its connection for a shortage of this machine's: each would fail alike (local-shortage.ts).
    if (shortages.pausedUntil() > clock.now().getTime()) return { claimed: 0, full: false }
    let { held, filling } = fullHosts()
    if (await rereadHeldServices(held.services)) ({ held, filling } = fullHosts())
    heldBack = held.hosts.length > 0
    const now = clock.now()
    let claimed = 0
    const claim = async (limit: number, options: Pick<ClaimOptions, 'skipServices' | 'skipHosts' | 'only'>) => {
      claiming = limit
      let claims: ClaimedDelivery[]
      try {
        claims = await claimDeliveries(db, { workerId: deps.workerId, now, leaseMs: settings.leaseMs, limit, ...options })
        for (const claim of claims) dispatch(claim)
      } catch (error) {
        unansweredClaims.push(new Date(now.getTime() + settings.leaseMs))
        throw error
      } finally {
        claiming = 0
        servePlaceLine()
      }
      metrics.claimed(claims.length)
      claimed += claims.length
      return claims.length
    }
    for (const { host, services, places } of filling) {
      // The room is read again before each claim: while the last one (or the read of the held
      // services) ran, calls that had their host's slot took the places that came free.
      const room = roomForCalls()
      // A claim apart that came back short has just read every due delivery: its host has no more for
      // now. It rests only while calls are in flight, whose ends bring the next pass.
      if (room <= 0 || (inFlight.size > 0 && recentlyShort.resting(host))) continue
      const limit = Math.min(room, places)
      recentlyShort.claimed(host, (await claim(limit, { only: { services, hosts: [host] } })) < limit)
    }
    const room = roomForCalls()
    if (room <= 0) return { claimed, full: false }
    const limit = Math.min(room, settings.batchSize)
    const full = (await claim(limit, { skipServices: held.services, skipHosts: held.hosts })) === limit
    return { claimed, full }
  }

  /**
   * The hosts full at this worker and their services, held out of the main claim (a free target's
   * delivery names its host: deliveries.target_host), and each such host whose line has places.
   */
  function fullHosts(): { held: { services: string[]; hosts: string[] }; filling: Line[] } {
    const held = { services: [] as string[], hosts: [] as string[] }
    if (!hostSlots) return { held, filling: [] }
    const lines = new Map<string, Line>()
    for (const host of hostSlots.knownHosts()) {
      const places = hostSlots.placesAt(host)
      if (places === undefined) continue
      held.hosts.push(host)
      lines.set(host, { host, services: [], places })
    }
    for (const [service, host] of hostOfService) {
      const line = lines.get(host)
      if (!line) continue
      held.services.push(service)
      line.services.push(service)
    }
    return { held, filling: [...lines.values()].filter((line) => line.places > 0) }
  }

  /**
   * A service held back behind its host's full line may have moved its URL since this worker last
   * claimed it (hostOfService): its calls, which go to the URL as it is when they are claimed, would
   * wait for places in a line they no longer join, as long as the old host stayed full. Their URLs are
   * read again (a primary-key read of a few rows, never more than once a HELD_SERVICES_REREAD_MS);
   * true when one moved.
   */
  async function rereadHeldServices(services: string[]): Promise<boolean> {
    if (services.length === 0 || elapsed() - heldServicesReadAt < HELD_SERVICES_REREAD_MS) return false
    heldServicesReadAt = elapsed()
    const urls = new Map((await currentServiceUrls(db, services)).map((row) => [row.id, row.webhookUrl]))
    let moved = false
    for (const service of services) {
      const url = urls.get(service)
      const host = url === undefined ? undefined : hostKey(url)
      if (host === hostOfService.get(service)) continue
      moved = true
      if (host) hostOfService.set(service, host)
      else hostOfService.delete(service)
    }
    return moved
  }

  /** Calls that ended and whose outcome is not written yet. Past OUTCOMES_WAITING_PER_CALL × SCHEDULER_CONCURRENCY of them, fewer calls start. */
  function unwrittenOutcomes(): number {
    return recording.size - inFlight.size
  }

  function dispatch(claim: ClaimedDelivery): void {
    const abort = new AbortController()
    const host = hostKey(claim.webhookUrl)
    if (hostSlots && host && claim.serviceId !== null) hostOfService.set(claim.serviceId, host)
    const place = callPlace()
    let ended: () => void = () => {}
    const called = new Promise<void>((resolve) => {
      let over = false
      ended = () => {
        if (over) return
        over = true
        // Each call gives back its own place, a delivery claimed again meanwhile (its lease ran out while
        // this call hung) as well.
        inFlight.delete(call)
        resolve()
        place.leave()
      }
    })
    const call = { claim, abort, called }
    inFlight.add(call)
    dispatchedLeaseEnds.add(claim.leaseExpiresAt.getTime())
    const done: Promise<void> = deliver(deliverDeps, claim, { stopping: stopSignal.signal, cutOff: abort.signal, onCallEnded: ended, place })
      .then(() => undefined, (error: unknown) => {
        deps.log.error({ err: error, deliveryId: claim.id }, 'recording a delivery failed; its lease will expire and it will be retried')
      })
      .finally(() => {
        ended()
        const heldBack = unwrittenOutcomes() > settings.concurrency * OUTCOMES_WAITING_PER_CALL
        recording.delete(done)
        if (heldBack) {
          woken = true
          wakeUp?.()
        }
      })
    recording.add(done)
  }

  /**
   * Each chore runs on its own: one that fails is logged and the others still run. Mail is sent here
   * only for runOnce; the loop sends it beside its claims (pumpMail), since SMTP is slow.
   */
  async function housekeeping(sendMailToo = true): Promise<Omit<RunSummary, 'deliveries'>> {
    const now = clock.now()
    const chore = async (name: string, work: () => Promise<number>): Promise<number> => {
      try {
        return await work()
      } catch (error) {
        choreFailed(error, name, 'it runs again on the next pass')
        return 0
      }
    }
    const onError = (error: unknown, id: string) => {
      if (isTransientDatabaseError(error)) deps.log.warn({ err: error, id }, 'scheduler chore collided with another transaction for one row; the others go on, it runs again')
      else deps.log.error({ err: error, id }, 'scheduler chore failed for one row; the others go on')
    }
    const reaped = await chore('reapExpiredLeases', () => reapExpiredLeases(db, now))
    leasesReapedTo = now
    metrics.leasesReaped(reaped)
    const stepsStarted = await chore('startDueSteps', () => startDueSteps(db, now, settings.batchSize, onError))
    const automaticSteps = await chore('runAutomaticSteps', () => runAutomaticSteps(db, now, settings.batchSize, onError))
      + await chore('endFollowUps', () => endFollowUps(db, now, settings.batchSize, onError))
    // A check is whole when neither it nor any template's part of it failed.
    let datesChecked = false
    const datesDue = now.getTime() >= nextDateCheckAt || now.getTime() < datesCheckedAt
    const autostarts = !datesDue ? 0 : await chore('autostartOnDates', async () => {
      let whole = true
      const started = await autostartOnDates(db, now, settings.batchSize, (error, id) => {
        whole = false
        onError(error, id)
      })
      datesChecked = whole
      return started
    })
    // Dates are checked every DATE_CHECK_EVERY_MS (each date starts once, whichever pass finds it), again at
    // once while they start processes, a minute after a check that failed, and at once when the clock was
    // stepped back behind the last check (its ten minutes would have lasted as long as the step).
    if (datesDue) {
      datesCheckedAt = now.getTime()
      nextDateCheckAt = autostarts > 0 ? 0 : now.getTime() + (datesChecked ? DATE_CHECK_EVERY_MS : DATE_CHECK_RETRY_MS)
    }
    const deadlines = await chore('sweepDeadlines', () => sweepDeadlines(db, now, settings.batchSize, onError))
    metrics.deadlinesFired(deadlines)
    // The mails' lease runs from the claim (send-mail.ts), not from this pass's start, which the chores above may have made long ago.
    const mails = sendMailToo ? await chore('sendQueuedMail', async () => (await sendMail(clock.now())).sent) : 0
    return { reaped, stepsStarted, automaticSteps, autostarts, deadlines, mails }
  }

  let mailPump: Promise<void> | undefined
  /** What the mail passes know of the SMTP server: held after a failure of its own, then one mail alone (send-mail.ts). */
  const mailServer = mailServerState()
  /**
   * Sends queued mail in the background, small batches one after another while they come full, so a
   * stopping worker finishes its current batch quickly; one pump at a time.
   */
  function pumpMail(): void {
    if (mailPump || stopping) return
    const batch = Math.min(settings.batchSize, MAIL_PUMP_BATCH)
    mailPump = (async () => {
      try {
        while (!stopping && (await sendMail(clock.now(), batch)).more);
      } catch (error) {
        // As the other chores: a database away (a cut connection, a statement timeout behind a lock) is a
        // warning at most every few seconds, not an error each time.
        choreFailed(error, 'sendQueuedMail', 'it runs again on the next pass')
      } finally {
        mailPump = undefined
      }
    })()
  }

  function sendMail(now: Date, limit = settings.batchSize): Promise<MailPass> {
    return sendQueuedMail(db, deps.mailer, {
      now, from: settings.mailFrom, limit, log: deps.log, metrics, cutOff: graceOverSignal.signal, server: mailServer,
      onError: (error, id) => deps.log.error({ err: error, id }, 'settling a step mail failed; its step fails into a manual one, the others go on')
    })
  }

  async function runOnce(): Promise<RunSummary> {
    const total: RunSummary = { stepsStarted: 0, automaticSteps: 0, autostarts: 0, deliveries: 0, deadlines: 0, mails: 0, reaped: 0 }
    for (;;) {
      const chores = await housekeeping()
      let deliveries = 0
      for (let claimed = (await claimAndDispatch()).claimed; claimed > 0 || inFlight.size > 0; claimed = (await claimAndDispatch()).claimed) {
        deliveries += claimed
        if (inFlight.size > 0) await Promise.race([...inFlight].map((f) => f.called))
      }
      await Promise.all([...recording])
      const mails = deliveries > 0 ? (await sendMail(clock.now())).sent : 0
      const pass = { ...chores, deliveries, mails: chores.mails + mails }
      for (const key of Object.keys(total) as (keyof RunSummary)[]) total[key] += pass[key]
      if (Object.values(pass).every((n) => n === 0)) return total
    }
  }

  /**
   * Claims whenever there is room and work, and starts the chores beside the claims when they are
   * due: a wake-up for new work never waits behind them.
   */
  async function run(): Promise<void> {
    if (deps.soleWorker) await takeOverClaimsLeft()
    let failures = 0
    while (!stopping) {
      try {
        woken = false
        const { claimed, full } = await claimAndDispatch()
        startChoresIfDue()
        retention.startIfDue()
        deletions.startIfDue()
        failures = 0
        // A full claim may have left more due; a short one took all that was due then.
        if (full && roomForCalls() > 0) continue
        await sleep(await idleMs(claimed))
      } catch (error) {
        failures += 1
        const waitMs = backoffMs(DATABASE_BACKOFF, failures)
        if (isDatabaseUnavailable(error)) deps.log.warn({ err: error, retryInMs: waitMs }, `scheduler: ${unavailableReason(error)}; backing off`)
        // A deadlock or a serialization failure with another process's transaction (a migration's, say): the pass is run again.
        else if (isTransientDatabaseError(error)) deps.log.warn({ err: error, retryInMs: waitMs }, 'scheduler pass collided with another transaction; retrying shortly')
        else deps.log.error({ err: error, retryInMs: waitMs }, 'scheduler pass failed; retrying shortly')
        // The chores may have been cut off: run them on the next pass.
        choresWanted = true
        await sleep(waitMs)
      }
    }
  }

  /**
   * The deliveries of claims whose answer was lost go back, uncounted (releaseUnansweredClaim). Those whose
   * lease has ended are the reaper's, and so are those of a lost claim whose lease end a claim this worker
   * had shares (made at the same instant): they cannot be told apart.
   */
  async function takeBackUnansweredClaims(now: Date): Promise<void> {
    // Kept in the order the claims came, their lease ends rising with them (a clock stepped back leaves a few longer).
    for (const leaseEnd of dispatchedLeaseEnds) {
      if (leaseEnd > now.getTime()) break
      dispatchedLeaseEnds.delete(leaseEnd)
    }
    for (let i = 0; i < unansweredClaims.length;) {
      const leaseUntil = unansweredClaims[i]!
      const alone = leaseUntil.getTime() > now.getTime() && !dispatchedLeaseEnds.has(leaseUntil.getTime())
      const released = alone ? await releaseUnansweredClaim(db, deps.workerId, leaseUntil) : 0
      // Nothing yet: the claim rolled back, or its commit lands later (a slow server). It is looked for
      // again at each pass until its lease ends, when it is the reaper's.
      if (alone && released === 0) {
        i++
        continue
      }
      unansweredClaims.splice(i, 1)
      if (released > 0) deps.log.info({ released }, 'took back the deliveries of a claim whose answer the database connection lost; they are claimed again now')
    }
  }

  /** A sole worker's start: the claims a process that ended left go back at once (see SchedulerDeps.soleWorker). */
  async function takeOverClaimsLeft(): Promise<void> {
    try {
      const taken = await takeOverLeftClaims(db, clock.now())
      metrics.leasesReaped(taken.deliveries)
      if (taken.deliveries + taken.mails > 0) {
        deps.log.info(taken, 'took back the calls and mails a process that ended had claimed; they are made again now, not when their leases end')
      }
    } catch (error) {
      // Their leases end as any do, and the reaper takes them back then.
      deps.log.warn({ err: error }, 'taking back the claims a process that ended left failed; they go back when their leases end')
    }
  }

  /**
   * A chore that runs beside the loop's passes, in the background, when its time has come: `work`
   * answers how long until it runs again; after a failure it runs again `afterFailureMs` later.
   */
  function backgroundChore(name: string, work: (now: Date) => Promise<number>, afterFailureMs: number) {
    let running: Promise<void> | undefined
    let nextAt = 0
    return {
      startIfDue(): void {
        const now = clock.now()
        if (running || stopping || now.getTime() < nextAt) return
        running = work(now)
          .then((waitMs) => { nextAt = clock.now().getTime() + waitMs })
          .catch((error: unknown) => {
            nextAt = clock.now().getTime() + afterFailureMs
            // Stopped between two of its parts: it goes on where it stopped on the next start.
            if (stopSignal.signal.aborted && error === stopSignal.signal.reason) return
            choreFailed(error, name, 'it runs again later')
          })
          .finally(() => { running = undefined })
      },
      /** Settles when the chore running now (if any) has ended. */
      ended: () => running
    }
  }

  /** Removes old finished data: every RETENTION_EVERY_MS, and again soon while batches come full. */
  const retention = backgroundChore('removeOldHistory', async (now) => {
    if (!settings.retentionDays) return RETENTION_EVERY_MS
    const removed = await removeOldHistory(db, now, settings.retentionDays, RETENTION_BATCH, stopSignal.signal)
    return removed >= RETENTION_BATCH ? 1000 : RETENTION_EVERY_MS
  }, RETENTION_EVERY_MS)

  /** Tenants whose deletion failed on its own here, and when (the clock's ms): left out for DELETION_RETRY_MS. */
  const deletionsFailed = new Map<string, number>()
  /**
   * Finishes the deletions of tenants left marked (a deletion cut off): at the start, then every
   * DELETIONS_EVERY_MS. A tenant whose deletion failed is left out a while, so that a few that always
   * fail, the oldest marked, do not hold back those marked after them.
   */
  const deletions = backgroundChore('finishTenantDeletions', async (now) => {
    for (const [id, at] of deletionsFailed) if (now.getTime() - at >= DELETION_RETRY_MS || now.getTime() < at) deletionsFailed.delete(id)
    const onError: RowErrorHandler = (error, id) => {
      deletionsFailed.set(id, now.getTime())
      deps.log.error({ err: error, tenantId: id }, 'finishing a tenant\'s deletion failed; it is tried again in an hour')
    }
    await finishTenantDeletions(db, now, { signal: stopSignal.signal, onError, log: deps.log, skip: [...deletionsFailed.keys()] })
    return DELETIONS_EVERY_MS
  }, DELETIONS_EVERY_MS)

  let chores: Promise<void> | undefined
  let lastChores = 0
  /**
   * Runs the chores in the background when asked for, when the next one falls due, or a poll interval
   * after the last (or once the clock was stepped back behind it, which would wait as long as the step).
   */
  function startChoresIfDue(): void {
    const now = clock.now().getTime()
    const due = choresWanted || (nextChoresAt !== undefined && nextChoresAt <= now) || now - lastChores >= settings.pollIntervalMs || now < lastChores
    if (chores || stopping || !due) return
    choresWanted = false
    lastChores = now
    chores = housekeeping(false).then((done) => {
      pumpMail()
      // More may be waiting behind a full batch: go again at once.
      if (Object.values(done).some((n) => n > 0)) wake(undefined)
    }).finally(() => { chores = undefined })
  }

  let lastDue: { delivery: Date | undefined; chores: Date | undefined; readAt: number } | undefined
  /**
   * Until the next known due time, at most a poll interval; a NOTIFY or a finished call wakes earlier.
   * While calls are in flight their ends wake the loop often: the next due time is read again only
   * after DUE_REREAD_MS (it was read on about every third step).
   */
  /** Reads the due times; an announcement made before it is kept when the read fails, to be looked for after the backoff. */
  async function readDue(now: number): Promise<NonNullable<typeof lastDue>> {
    const announced = stepsAnnounced
    stepsAnnounced = false
    try {
      return { ...(await nextDue(db, leasesReapedTo)), readAt: now }
    } catch (error) {
      stepsAnnounced ||= announced
      throw error
    }
  }

  async function idleMs(claimed: number): Promise<number> {
    const now = clock.now().getTime()
    // A reading from before a step back of the clock (the database's, read again) is stale as well.
    const stale = (due: NonNullable<typeof lastDue>) => now - due.readAt >= DUE_REREAD_MS || now < due.readAt
    /** Until the due times may be read again: a step announced meanwhile is looked for then. */
    const untilReread = (due: NonNullable<typeof lastDue>) => Math.min(settings.pollIntervalMs, Math.max(0, due.readAt + DUE_REREAD_MS - now))
    // No room for another call: the end of one wakes the loop for the calls, but the chores run beside
    // them and keep their own time. Before, a full worker read no due time: an automatic step, a step's
    // start or a deadline waited for the poll interval (or for a call to end, 10 s at a host that hangs)
    // while the worker's places were taken, whatever its tenant (1.2 s at the defaults in a probe, 9 s
    // with a poll interval of 5 s).
    if (roomForCalls() <= 0) {
      if (!lastDue || stale(lastDue)) {
        lastDue = await readDue(now)
      } else if (stepsAnnounced) {
        return untilReread(lastDue)
      }
      nextChoresAt = lastDue.chores?.getTime()
      startChoresIfDue()
      if (nextChoresAt === undefined) return settings.pollIntervalMs
      // Due already: the chores now running take it, or a look again shortly does (not at once: a row
      // they cannot take, another worker's, would keep the loop spinning).
      const untilChores = nextChoresAt - now
      return Math.max(untilChores <= 0 ? DUE_REREAD_MS : 0, Math.min(settings.pollIntervalMs, untilChores))
    }
    if (inFlight.size === 0 || !lastDue || stale(lastDue)) lastDue = await readDue(now)
    const due = lastDue
    nextChoresAt = due.chores?.getTime()
    const next = [due.delivery, due.chores].filter((d) => d !== undefined).sort((a, b) => a.getTime() - b.getTime())[0]
    const untilNext = next ? next.getTime() - clock.now().getTime() : settings.pollIntervalMs
    // Due, yet the claim took nothing (other workers hold it, or its host is crowded here): not again at once.
    const floor = claimed === 0 && untilNext <= 0 ? RECLAIM_FLOOR_MS : 0
    // Due, while this machine is short of what a call needs: not before the pause ends (chores due meanwhile wait a poll interval at most).
    const untilPauseEnds = Math.min(settings.pollIntervalMs, shortages.pausedUntil() - clock.now().getTime())
    const wait = Math.max(floor, untilPauseEnds, Math.min(settings.pollIntervalMs, untilNext))
    // A step announced since the due times were read, which calls in flight kept from being read again.
    return stepsAnnounced ? Math.min(wait, Math.max(floor, untilPauseEnds, untilReread(due))) : wait
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
      stopSignal = stopController()
      graceOverSignal = new AbortController()
      loop = run()
    },
    async stop(graceMs) {
      stopping = true
      stopSignal.abort()
      wake()
      // The grace runs from the signal, for the calls and the mail batch in flight alike.
      const graceOver = new Promise((resolve) => setTimeout(resolve, graceMs).unref())
      const cutOffMarks = graceOverSignal
      void graceOver.then(() => cutOffMarks.abort())
      // A claim, a chore or an outcome's write may wait on a row or table another session holds (up to
      // DATABASE_STATEMENT_TIMEOUT_MS, then tried again): waited for, they held the stop past the process's
      // hard limit (grace + 5 s), and it exited 1. Past the grace and CUT_OFF_WRITES_MS they are left as a
      // crash leaves them: the process's end rolls back what they had not committed, and a claim taken
      // meanwhile or an outcome not written goes back when its lease ends, to be made again with the same
      // Idempotency-Key.
      const writesOver = graceOver.then(() => new Promise((resolve) => setTimeout(resolve, CUT_OFF_WRITES_MS).unref()))
      await Promise.race([loop, writesOver])
      // A claim whose answer was lost since the last pass gives its deliveries back now, not when its lease
      // ends (the reaper would count an attempt for a call never made); a database still away leaves them
      // so, within the grace: the calls in flight are cut off when it is over.
      await Promise.race([takeBackUnansweredClaims(clock.now()).catch(() => {}), graceOver])
      await unlisten?.()
      await Promise.race([chores, writesOver])
      // Stopped between two parts, a chore still ends its part, which may wait for locks: within the grace.
      await Promise.race([Promise.all([retention.ended(), deletions.ended()]), graceOver])
      // A batch whose SMTP server does not answer waits out its timeouts (15 s a mail), which held the
      // stop past the process's hard limit (grace + 5 s): it exited 1 without cutting off its calls.
      // Left after the grace, the batch is as a crash leaves it: its lease sends it again later.
      await Promise.race([mailPump, graceOver])
      const pending = [...inFlight]
      await Promise.race([Promise.all(pending.map((f) => f.called)), graceOver])
      for (const flight of inFlight) flight.abort.abort()
      // The calls cut off are written as aborted attempts now, which takes milliseconds unless a lock holds them.
      await Promise.race([Promise.all([...recording]), writesOver])
      await hostSlots?.close()
    }
  }
}
