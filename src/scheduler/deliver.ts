import type { Clock } from '../adapters/clock.js'
import { HttpCallError, type HttpClient, type HttpResponse } from '../adapters/http-client.js'
import type { DB } from '../db/connect.js'
import type { ClaimedDelivery } from './claim-deliveries.js'
import { recordOutcome, type Recorded } from './record-outcome.js'
import { decide, type AttemptResult, type RetryPolicy } from './retry-policy.js'
import { signClaim } from '../lib/api-claims.js'
import { PLAIN_SECRETS, secretContext, type SecretBox } from '../lib/secret-box.js'
import { buildRequest } from './webhook-request.js'
import { releaseDelivery } from './delivery-repository.js'
import { hostKey, type HostSlotPool } from './host-slots.js'

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
  hostSlots?: HostSlotPool
  /** Opens the services' secrets when they are sealed (BATON_SECRETS_KEY); by default none may be. */
  secrets?: SecretBox
}

/** Roughly how long a delivery first waits when its host has no free slot (±50 %); it doubles with each wait. */
export const HOST_BUSY_DELAY_MS = 1000
const HOST_BUSY_MAX_DELAY_MS = 30_000

/**
 * The wait before a deferred delivery is claimed again. Claims beyond attempts (the fence counts every
 * claim) are earlier waits, so a backlog at a saturated host backs off instead of being re-claimed
 * every second by every worker.
 */
export function hostBusyDelayMs(delivery: Pick<ClaimedDelivery, 'fence' | 'attempt'>, random = Math.random()): number {
  const waits = Math.max(0, delivery.fence - delivery.attempt)
  return Math.round(Math.min(HOST_BUSY_MAX_DELAY_MS, HOST_BUSY_DELAY_MS * 2 ** Math.min(waits, 5)) * (0.5 + random))
}

const LOGGED_BODY_BYTES = 4096

/**
 * Calls the provider for one claimed delivery, outside any transaction, then records the outcome.
 * `deferred`: the host had no free slot, and the delivery went back to the queue without an attempt.
 */
export async function deliver(deps: DeliverDeps, delivery: ClaimedDelivery, signal?: AbortSignal): Promise<Recorded | 'deferred'> {
  const startedAt = deps.clock.now()
  const refusal = !delivery.serviceUsable ? `service "${delivery.serviceName}" is no longer active for this tenant; no call was made`
    // Only attempts whose worker died (lease expired) get past the limit: a call that kills its worker is not made forever.
    : delivery.attempt > deps.policy.maxAttempts ? `gave up after ${deps.policy.maxAttempts} attempts without an outcome` : undefined
  if (refusal) {
    return recordOutcome(deps.db, {
      delivery, startedAt, durationMs: 0, statusCode: null, error: refusal, responseBody: null, decision: { action: 'give-up', reason: refusal }
    }, startedAt)
  }
  const host = deps.hostSlots ? hostKey(delivery.webhookUrl) : undefined
  let claimKey: Buffer
  let slot: Awaited<ReturnType<HostSlotPool['take']>> | undefined
  let signed: ClaimedDelivery
  try {
    claimKey = await deps.claimKey()
    // A secret this process cannot open (BATON_SECRETS_KEY unset or changed) is a setting to fix, not an attempt.
    signed = withOpenSecrets(deps.secrets ?? PLAIN_SECRETS, delivery)
    slot = host ? await deps.hostSlots?.take(host) : undefined
  } catch (error) {
    // No call was made (the database did not answer): back to the queue without using an attempt.
    await releaseDelivery(deps.db, delivery, startedAt, new Date(startedAt.getTime() + hostBusyDelayMs(delivery))).catch(() => undefined)
    throw error
  }
  if (host && !slot) {
    // Not an attempt: the call was never made, so it goes back to the queue uncounted and unlogged.
    await releaseDelivery(deps.db, delivery, startedAt, new Date(startedAt.getTime() + hostBusyDelayMs(delivery)))
    return 'deferred'
  }
  let attempt: Attempt
  try {
    attempt = await call(deps, signed, startedAt, claimKey, signal)
  } finally {
    if (host && slot) deps.hostSlots?.give(host, slot)
  }
  const now = deps.clock.now()
  return recordOutcome(deps.db, {
    delivery,
    startedAt,
    durationMs: attempt.durationMs,
    statusCode: attempt.response?.status ?? null,
    error: attempt.result.kind === 'response' ? null : attempt.result.error,
    responseBody: attempt.response ? redactClaims(firstBytes(attempt.response.body, LOGGED_BODY_BYTES)) : null,
    decision: decide(attempt.result, delivery.attempt, now, deps.policy)
  }, now)
}

interface Attempt {
  result: AttemptResult
  response: HttpResponse | undefined
  durationMs: number
}

async function call(deps: DeliverDeps, delivery: ClaimedDelivery, startedAt: Date, claimKey: Buffer, signal: AbortSignal | undefined): Promise<Attempt> {
  const apiClaim = signClaim({
    tenantId: delivery.tenantId,
    serviceId: delivery.serviceId,
    deliveryId: delivery.id,
    propertyId: delivery.propertyId,
    addressId: delivery.addressId,
    expiresAt: Math.floor((startedAt.getTime() + deps.claimTtlMs) / 1000)
  }, claimKey)
  const request = buildRequest(delivery.mode, delivery, { now: startedAt, apiClaim, userAgent: deps.userAgent, timeoutMs: deps.timeoutMs })
  const started = performance.now()
  let result: AttemptResult
  let response: HttpResponse | undefined
  try {
    response = await deps.http.send(signal ? { ...request, signal } : request)
    result = { kind: 'response', status: response.status, retryAfter: header(response, 'retry-after') }
  } catch (error) {
    if (signal?.aborted) throw error
    const text = error instanceof HttpCallError ? `${error.code}: ${error.message}` : String(error)
    result = { kind: error instanceof HttpCallError && error.targetRefused ? 'refused' : 'error', error: text }
  }
  return { result, response, durationMs: Math.round(performance.now() - started) }
}

function withOpenSecrets(secrets: SecretBox, delivery: ClaimedDelivery): ClaimedDelivery {
  const context = secretContext.service(delivery.serviceId)
  const previousSecret = delivery.previousSecret === null ? null : secrets.open(delivery.previousSecret, context)
  return { ...delivery, secret: secrets.open(delivery.secret, context), previousSecret }
}

function header(response: HttpResponse, name: string): string | undefined {
  const value = response.headers[name]
  return Array.isArray(value) ? value[0] : value
}

function firstBytes(text: string, bytes: number): string {
  const buffer = Buffer.from(text, 'utf8')
  return buffer.length <= bytes ? text : buffer.subarray(0, bytes).toString('utf8')
}

/** A provider that echoes its request (an error page with the URL) must not put a live claim in the attempt log. */
export function redactClaims(text: string): string {
  return text.replace(/bcl_[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*)?/g, 'bcl_[redacted]')
}
