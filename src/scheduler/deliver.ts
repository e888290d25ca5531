import type { Clock } from '../adapters/clock.js'
import { HttpCallError, type HttpClient, type HttpResponse } from '../adapters/http-client.js'
import type { DB } from '../db/connect.js'
import type { ClaimedDelivery } from './claim-deliveries.js'
import { recordOutcome, type Recorded } from './record-outcome.js'
import { decide, type AttemptResult, type RetryPolicy } from './retry-policy.js'
import { signClaim } from '../lib/api-claims.js'
import { buildRequest } from './webhook-request.js'

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
}

const LOGGED_BODY_BYTES = 4096

/** Calls the provider for one claimed delivery, outside any transaction, then records the outcome. */
export async function deliver(deps: DeliverDeps, delivery: ClaimedDelivery, signal?: AbortSignal): Promise<Recorded> {
  const startedAt = deps.clock.now()
  const refusal = !delivery.serviceUsable ? `service "${delivery.serviceName}" is no longer active for this tenant; no call was made`
    // Only attempts whose worker died (lease expired) get past the limit: a call that kills its worker is not made forever.
    : delivery.attempt > deps.policy.maxAttempts ? `gave up after ${deps.policy.maxAttempts} attempts without an outcome` : undefined
  if (refusal) {
    return recordOutcome(deps.db, {
      delivery, startedAt, durationMs: 0, statusCode: null, error: refusal, responseBody: null, decision: { action: 'give-up', reason: refusal }
    }, startedAt)
  }
  const apiClaim = signClaim({
    tenantId: delivery.tenantId,
    serviceId: delivery.serviceId,
    deliveryId: delivery.id,
    propertyId: delivery.propertyId,
    addressId: delivery.addressId,
    expiresAt: Math.floor((startedAt.getTime() + deps.claimTtlMs) / 1000)
  }, await deps.claimKey())
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
  const durationMs = Math.round(performance.now() - started)
  const now = deps.clock.now()
  return recordOutcome(deps.db, {
    delivery,
    startedAt,
    durationMs,
    statusCode: response?.status ?? null,
    error: result.kind === 'response' ? null : result.error,
    responseBody: response ? firstBytes(response.body, LOGGED_BODY_BYTES) : null,
    decision: decide(result, delivery.attempt, now, deps.policy)
  }, now)
}

function header(response: HttpResponse, name: string): string | undefined {
  const value = response.headers[name]
  return Array.isArray(value) ? value[0] : value
}

function firstBytes(text: string, bytes: number): string {
  const buffer = Buffer.from(text, 'utf8')
  return buffer.length <= bytes ? text : buffer.subarray(0, bytes).toString('utf8')
}
