import type { Clock } from '../adapters/clock.js'
import { HttpCallError, LocalShortageError, type HttpClient, type HttpResponse } from '../adapters/http-client.js'
import type { DB } from '../db/connect.js'
import type { AttemptOutcome } from '../db/database.js'
import type { ClaimedDelivery } from './claim-deliveries.js'
import type { OutcomeBatcher } from './outcome-batcher.js'
import type { AttemptRecord, Recorded } from './record-outcome.js'
import { decide, gaveUpAfter, type AttemptResult, type Decision, type RetryPolicy } from './retry-policy.js'
import { signClaim } from '../lib/api-claims.js'
import type { BatonMetrics } from '../lib/metrics.js'
import { PLAIN_SECRETS, secretContext, type SecretBox } from '../lib/secret-box.js'
import { buildRequest } from './webhook-request.js'
import { cancelClaimedDelivery, releaseDelivery } from './delivery-repository.js'
import { cutText, cutUtf8, storable } from '../lib/storable.js'
import { redactEchoed } from '../lib/echoed-values.js'
import { WITHDRAWN } from '../lib/withdrawn-calls.js'
import { hostKey } from '../lib/host-key.js'
import type { HostSlots } from './host-slots.js'
import { retryTransient } from './retry-transient.js'
import { LOCAL_SHORTAGE_WAIT_MS, type LocalShortages } from './local-shortage.js'

export interface DeliverDeps {
  db: DB
  clock: Clock
  http: HttpClient
  policy: RetryPolicy
  timeoutMs: number
  userAgent: string
  /** The apiClaim key, loaded once per process. */
  claimKey: () => Promise<Buffer>
  claimTtlMs: number
  /** Slots of the per-host limit across all workers; without them, calls are not limited per host. */
  hostSlots?: HostSlots
  /** Writes outcomes, many calls' to a transaction under load. */
  outcomes: OutcomeBatcher
  /** Opens the services' secrets when they are sealed (BATON_SECRETS_KEY); by default none may be. */
  secrets?: SecretBox
  /** Counts each call by outcome, with its duration and how late it was made. */
  metrics?: BatonMetrics
  /** Gets a line per attempt, with the delivery's id. */
  log?: AttemptLog
  /** Told when calls cannot open connections for a shortage of this machine, and when they can again. */
  shortages?: LocalShortages
}

interface AttemptLog {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
}

/**
 * `deferred`: no slot of its host came free in time, and the delivery went back to the queue without
 * an attempt; `released`: the worker is stopping and let it go before calling.
 */
export type Delivered = Recorded | 'deferred' | 'released'

const LOGGED_BODY_BYTES = 4096
/** How long a delivery whose secret this worker cannot open waits before it is claimed again. */
const UNOPENED_SECRET_DELAY_MS = 60_000
/** A worker stops trying to record an outcome this long before its lease ends, when the reaper may take it over. */
const LEASE_MARGIN_MS = 1000
/** How long recording a call cut off by shutdown may keep trying while the database does not answer. */
const SHUTDOWN_RECORD_MS = 3000

/**
 * Calls the provider for one claimed delivery, outside any transaction, then records the outcome.
 * Whatever the database does meanwhile, a call that was made is recorded as an attempt while this
 * worker's lease lasts; beyond it, the reaper logs it as aborted.
 */
export interface DeliverSignals {
  /** The worker is stopping: a call not yet made is released instead. */
  stopping?: AbortSignal
  /** The grace is over: a call in flight is cut off (and logged as aborted). */
  cutOff?: AbortSignal
  /** Told once the call has ended (or will not be made), before its outcome is written. */
  onCallEnded?: () => void
  /** The call's place of SCHEDULER_CONCURRENCY, given back while it waits for its host's slot. */
  place?: CallPlace
}

/** A call's place among those a worker makes at once (the scheduler's). */
export interface CallPlace {
  /** The call waits for its host's slot: its place is free meanwhile. */
  leave(): void
  /** It has the slot: true once it has a place again, false when none came within `maxWaitMs` or the signal fired. */
  take(maxWaitMs: number, signal?: AbortSignal): Promise<boolean>
}

export async function deliver(deps: DeliverDeps, delivery: ClaimedDelivery, signals: DeliverSignals = {}): Promise<Delivered> {
  const { stopping, cutOff: signal } = signals
  const callEnded = signals.onCallEnded ?? (() => {})
  const now = () => deps.clock.now()
  const startedAt = now()
  const until = new Date(delivery.leaseExpiresAt.getTime() - LEASE_MARGIN_MS)
  const withdrawal = withdrawnBecause(delivery)
  if (withdrawal) {
    callEnded()
    deps.log?.info({ deliveryId: delivery.id, tenantId: delivery.tenantId, serviceId: delivery.serviceId, attempt: delivery.attempt, reason: withdrawal },
      'webhook delivery cancelled without a call')
    const cancelled = await retryTransient(() => cancelClaimedDelivery(deps.db, delivery, withdrawal, now()), { until, now, signal })
    return cancelled ? 'recorded' : 'fenced'
  }
  const refusal = delivery.serviceState !== 'usable' ? notUsable(delivery)
    // Only attempts whose worker died (lease expired) get past the limit: a call that kills its worker is not made forever.
    : delivery.attempt > deps.policy.maxAttempts ? `${gaveUpAfter(deps.policy.maxAttempts)} without an outcome` : undefined
  if (refusal) {
    callEnded()
    deps.log?.warn({ deliveryId: delivery.id, tenantId: delivery.tenantId, serviceId: delivery.serviceId, attempt: delivery.attempt, reason: refusal },
      'webhook delivery given up without a call')
    const giveUp: Decision = { action: 'give-up', reason: refusal }
    return record(deps, { delivery, startedAt, durationMs: 0, statusCode: null, error: refusal, responseBody: null, decision: giveUp, outcome: 'failed' }, until, signal)
  }

  const host = deps.hostSlots ? hostKey(delivery.webhookUrl) : undefined
  let signed: ClaimedDelivery
  try {
    signed = withOpenSecrets(deps.secrets ?? PLAIN_SECRETS, delivery)
  } catch (error) {
    // A secret this worker cannot open (BATON_SECRETS_KEY unset or changed) is a setting to fix, not an
    // attempt: the delivery waits a minute, uncounted, and the error reaches the worker's log.
    await retryTransient(() => releaseDelivery(deps.db, delivery, { dueAt: new Date(now().getTime() + UNOPENED_SECRET_DELAY_MS) }), { until, now })
    throw error
  }
  const claimKey = await retryTransient(deps.claimKey, { until, signal: stopping, now }).catch(() => undefined)
  let waited = false
  const onWait = () => {
    waited = true
    signals.place?.leave()
  }
  const slot = claimKey && host ? await deps.hostSlots?.acquire(host, slotWaitMs(deps, until), stopping, { dueAt: delivery.dueAt.getTime(), onWait }) : undefined
  // A call that waited for its slot keeps it while it waits for a place, within what its lease leaves.
  const placed = !slot || !waited || !signals.place || await signals.place.take(slotWaitMs(deps, until), stopping)
  // The statements before the call may have waited (behind a busy embedded database's queue, or for a
  // full pool's connection) until the lease ran out, or so near it that the call could outlast it: a call
  // made then was made twice, as the claim could be taken back and called again meanwhile. A call goes
  // only with its timeout's worth of lease left, as a wait for a slot ends then (slotWaitMs).
  const leaseOver = now().getTime() > delivery.leaseExpiresAt.getTime() - deps.timeoutMs
  if (!claimKey || (host && !slot) || !placed || leaseOver || stopping?.aborted) {
    if (slot) deps.hostSlots?.release(slot)
    callEnded()
    // No call was made: back to the queue without using an attempt, at its place.
    const targetHost = delivery.serviceId === null ? host : undefined
    await retryTransient(() => releaseDelivery(deps.db, delivery, { targetHost }), { until, now })
    return stopping?.aborted ? 'released' : 'deferred'
  }
  // Signed, and its apiClaim dated, as it goes out: a wait for the host's slot may have taken most of the lease.
  const calledAt = now()
  const callStarted = deps.shortages?.callStarts() ?? 0
  let attempt: Attempt
  try {
    attempt = await call(deps, signed, calledAt, claimKey, signal)
  } finally {
    if (slot) deps.hostSlots?.release(slot)
    callEnded()
  }
  if (attempt.shortOf) return waitOutShortage(deps, delivery, attempt.shortOf, until)
  // A call that never went out is no lag: it is measured when the call is made, from its due time.
  deps.metrics?.webhookCallLag(delivery.dueAt, calledAt)
  // Only a call that opened a connection (an answer, or the network's error) says the machine has descriptors again.
  if (attempt.result.kind === 'response' || attempt.result.kind === 'error') deps.shortages?.over(callStarted)
  const answeredAt = now()
  const decision = decide(attempt.result, delivery.attempt, answeredAt, deps.policy)
  const wasCutOff = attempt.result.kind === 'aborted'
  const outcome = wasCutOff ? 'aborted' : outcomeOf(decision)
  const statusCode = attempt.response?.status ?? null
  deps.metrics?.webhookCall(outcome, statusCode, attempt.durationMs)
  logAttempt(deps, delivery, { outcome, statusCode, durationMs: attempt.durationMs, result: attempt.result, decision, detail: attempt.detail })
  return record(deps, {
    delivery,
    startedAt: calledAt,
    durationMs: attempt.durationMs,
    statusCode,
    error: attempt.result.kind === 'response' ? null : storable(attempt.result.error),
    responseBody: attempt.response ? loggedBody(attempt.response, attempt.sent) : null,
    decision,
    outcome
  }, wasCutOff ? new Date(Math.min(until.getTime(), answeredAt.getTime() + SHUTDOWN_RECORD_MS)) : until, wasCutOff ? undefined : signal)
}

/**
 * Why a trigger's call is not made, when what asked for it was withdrawn after it was queued: the
 * tenant deactivated the service, the record was deleted, or no trigger of the service watches the
 * change any more. The request that withdrew it cancels the calls it can see (the same reasons, in
 * its transaction); this catches one queued in the same instant, or due again after a call in flight
 * then. The delivery ends `cancelled` as those do, with no attempt logged: it is the tenant's or the
 * operator's doing, not the provider's. A step's delivery is never withdrawn so: its step fails into
 * a manual one instead.
 */
function withdrawnBecause(delivery: ClaimedDelivery): string | undefined {
  if (delivery.source !== 'trigger') return undefined
  if (delivery.serviceState === 'withdrawn') return WITHDRAWN.deactivated
  if (delivery.recordGone) return WITHDRAWN.recordDeleted(delivery.propertyId === null ? 'address' : 'property')
  if (delivery.triggerGone) return WITHDRAWN.triggerGone
  return undefined
}

/** Why a call is not made to a service or target that cannot be used now: the tenant's doing reads otherwise than the operator's. */
function notUsable(delivery: ClaimedDelivery): string {
  if (delivery.serviceId === null) return `target "${delivery.serviceName}" is no longer active for this tenant; no call was made`
  return delivery.serviceState === 'withdrawn' ? `service "${delivery.serviceName}" is no longer active for this tenant; no call was made`
    : `service "${delivery.serviceName}" was deactivated by the operator (active: false); no call was made`
}

function record(deps: DeliverDeps, outcome: AttemptRecord, until: Date, signal: AbortSignal | undefined): Promise<Recorded> {
  return deps.outcomes.record(outcome, until, signal)
}

interface AttemptSummary {
  outcome: AttemptOutcome
  statusCode: number | null
  durationMs: number
  result: AttemptResult
  decision: Decision
  detail?: string | undefined
}

/** One line per call, named by its delivery: an operator follows a delivery through its attempts. */
function logAttempt(deps: DeliverDeps, delivery: ClaimedDelivery, { outcome, statusCode, durationMs, result, decision, detail }: AttemptSummary): void {
  if (!deps.log) return
  const line = {
    deliveryId: delivery.id, tenantId: delivery.tenantId, serviceId: delivery.serviceId, stepId: delivery.stepId, attempt: delivery.attempt,
    outcome, statusCode, durationMs,
    ...(result.kind === 'response' ? {} : { error: redactClaims(result.error) }),
    ...(detail === undefined ? {} : { resolved: detail }),
    ...(decision.action === 'retry' ? { retryInMs: decision.delayMs } : decision.action === 'give-up' ? { reason: decision.reason } : {})
  }
  if (outcome === 'succeeded' || outcome === 'retry') deps.log.info(line, 'webhook call')
  else deps.log.warn(line, 'webhook call')
}

function outcomeOf(decision: Decision): AttemptOutcome {
  return decision.action === 'succeed' ? 'succeeded' : decision.action === 'retry' ? 'retry' : 'failed'
}

/**
 * A call that could not open its connection because this machine ran short (file descriptors, kernel
 * buffers) never left it: the delivery goes back without using an attempt, as one deferred for its
 * host's slot does, and no call is claimed for LOCAL_SHORTAGE_WAIT_MS. No step fails and no attempt is
 * logged for it however long the shortage lasts; the worker's log says so once (LocalShortages).
 */
async function waitOutShortage(deps: DeliverDeps, delivery: ClaimedDelivery, shortOf: LocalShortage, until: Date): Promise<Delivered> {
  deps.shortages?.short(shortOf.what, shortOf.code, LOCAL_SHORTAGE_WAIT_MS)
  const now = () => deps.clock.now()
  // At its due time still: no call is claimed while the worker waits (LocalShortages.pausedUntil), and it keeps its place in the line.
  await retryTransient(() => releaseDelivery(deps.db, delivery), { until, now })
  return 'deferred'
}

/** A call waits for a slot while its lease leaves room for the call itself. */
function slotWaitMs(deps: DeliverDeps, until: Date): number {
  return Math.max(0, until.getTime() - deps.clock.now().getTime() - deps.timeoutMs)
}

interface Attempt {
  result: AttemptResult
  response: HttpResponse | undefined
  durationMs: number
  /** For the operator's log only: the address a refused host name resolved to. */
  detail?: string | undefined
  /** The claim and the secrets the call was made with, which its logged body must not show. */
  sent: string[]
  /** Set when the call never left this machine for a shortage of its own (LocalShortageError). */
  shortOf?: LocalShortage | undefined
}

interface LocalShortage {
  code: string
  what: string
}

async function call(deps: DeliverDeps, delivery: ClaimedDelivery, startedAt: Date, claimKey: Buffer, signal: AbortSignal | undefined): Promise<Attempt> {
  // A claim acts for a marketplace service; a free target is the tenant's own and calls back with the tenant's key.
  const apiClaim = delivery.serviceId === null ? undefined : signClaim({
    tenantId: delivery.tenantId,
    serviceId: delivery.serviceId,
    deliveryId: delivery.id,
    propertyId: delivery.propertyId,
    addressId: delivery.addressId,
    expiresAt: Math.floor((startedAt.getTime() + deps.claimTtlMs) / 1000),
    ...(delivery.activatedAt ? { activatedAt: delivery.activatedAt.getTime() } : {})
  }, claimKey)
  const request = buildRequest(delivery.mode, delivery, { now: startedAt, apiClaim, userAgent: deps.userAgent, timeoutMs: deps.timeoutMs })
  const started = performance.now()
  let result: AttemptResult
  let response: HttpResponse | undefined
  let detail: string | undefined
  let shortOf: LocalShortage | undefined
  try {
    // A free target (no service) is the tenant's own: the operator's allowed private targets are not for it.
    const tenantTarget = delivery.serviceId === null
    response = await deps.http.send({ ...request, ...(signal ? { signal } : {}), ...(tenantTarget ? { tenantTarget } : {}) })
    result = { kind: 'response', status: response.status, retryAfter: header(response, 'retry-after') }
  } catch (error) {
    const text = error instanceof HttpCallError ? `${error.code}: ${error.message}` : String(error)
    result = signal?.aborted ? { kind: 'aborted', error: 'cut off: the worker shut down before the provider answered' }
      : { kind: error instanceof HttpCallError && error.targetRefused ? 'refused' : 'error', error: text }
    if (error instanceof HttpCallError) detail = error.detail
    // Cut off by shutdown first: an aborted call is logged as one whatever else failed.
    if (error instanceof LocalShortageError && !signal?.aborted) shortOf = { code: error.code, what: error.shortOf }
  }
  // A whsec_ secret's key is the base64 after the prefix, as Standard Webhooks libraries (and pages showing the key) hold it.
  const secrets = [delivery.secret, delivery.previousSecret]
    .flatMap((secret) => (secret === null ? [] : secret.startsWith('whsec_') ? [secret, secret.slice('whsec_'.length)] : [secret]))
  const sent = [apiClaim, apiClaim?.slice(apiClaim.lastIndexOf('.') + 1), ...secrets].filter((value): value is string => typeof value === 'string')
  return { result, response, durationMs: Math.round(performance.now() - started), detail, sent, shortOf }
}

function withOpenSecrets(secrets: SecretBox, delivery: ClaimedDelivery): ClaimedDelivery {
  const context = delivery.serviceId === null
    ? secretContext.stepTarget(delivery.tenantId, delivery.webhookUrl) : secretContext.service(delivery.serviceId)
  const previousSecret = delivery.previousSecret === null ? null : secrets.open(delivery.previousSecret, context)
  return { ...delivery, secret: secrets.open(delivery.secret, context), previousSecret }
}

function header(response: HttpResponse, name: string): string | undefined {
  const value = response.headers[name]
  return Array.isArray(value) ? value[0] : value
}

/**
 * The first 4 KiB of a body, the claim and secrets the call was sent with and any claim-like word redacted
 * and NULs replaced before the cut: "bcl_[redacted]" and U+FFFD (three bytes for a NUL) can be longer than
 * what they replace. A body's first 4096 characters hold at least its first 4096 bytes; they are redacted
 * with the next 4096, so that a claim the cut would split is redacted whole, not its first part alone;
 * and where echoes before it shrank so much that the window's end comes into the 4 KiB, a value the
 * window's end splits goes (redactEchoed's `cut`).
 */
function loggedBody({ body, truncated }: Pick<HttpResponse, 'body' | 'truncated'>, sent: readonly string[]): string {
  const window = cutText(body, 2 * LOGGED_BODY_BYTES)
  // Cut here, or by the client at WEBHOOK_MAX_BODY_BYTES (as low as 1 KiB): either cut may split a value.
  return firstBytes(storable(redactClaims(redactEchoed(window, sent, { cut: truncated || window.length < body.length }))), LOGGED_BODY_BYTES)
}

function firstBytes(text: string, bytes: number): string {
  const buffer = Buffer.from(text, 'utf8')
  return buffer.length <= bytes ? text : cutUtf8(buffer.subarray(0, bytes))
}

/**
 * A provider that echoes its request (an error page with the URL) must not put a live claim in the attempt
 * log, whether it echoes the query as sent or percent-encoded (`bcl%5F…`).
 */
export function redactClaims(text: string): string {
  return text.replace(/bcl(?:_|%5[Ff])(?:[A-Za-z0-9_-]|%5[Ff])+(?:(?:\.|%2[Ee])(?:[A-Za-z0-9_-]|%5[Ff])*)?/g, 'bcl_[redacted]')
}
