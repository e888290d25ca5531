import type { HttpRequest } from '../adapters/http-client.js'
import type { DeliveryMode, JsonObject } from '../db/database.js'
import { signQueryUrl, standardWebhookSignature } from './signature.js'

/** What a claimed delivery knows about its call. */
export interface DeliveryCall {
  id: string
  webhookUrl: string
  secret: string
  /** The secret a rotation replaced, while its overlap window lasts; json calls carry both signatures. */
  previousSecret: string | null
  customerWebId: string
  customerName: string
  assigneeUserId: string | null
  instanceId: string | null
  stepId: string | null
  propertyId: string | null
  addressId: string | null
  event: string | null
  changedFields: string[] | null
  parameters: JsonObject
}

/**
 * What Baton says about the call itself, beside the step's parameters (README, How a call looks): the text
 * fields that are present. `changedFields` and `timestamp` are typed per scheme by the builders.
 */
function contextOf(call: DeliveryCall, apiClaim: string | undefined): Record<string, string> {
  const context: Record<string, string | null> = {
    customerWebId: call.customerWebId,
    customerName: call.customerName,
    userId: call.assigneeUserId,
    estateId: call.propertyId,
    addressId: call.addressId,
    processId: call.instanceId,
    stepId: call.stepId,
    deliveryId: call.id,
    event: call.event,
    apiClaim: apiClaim ?? null
  }
  return Object.fromEntries(Object.entries(context).filter((entry): entry is [string, string] => entry[1] !== null))
}

const unixSeconds = (now: Date) => Math.floor(now.getTime() / 1000)
const sortedFields = (call: DeliveryCall) => (call.changedFields ? [...call.changedFields].sort() : undefined)

/** The query parameters of a call, context first; the step's own parameters never override context. */
export function callParameters(call: DeliveryCall, now: Date, apiClaim: string | undefined): Record<string, string> {
  const params: Record<string, string> = {}
  for (const [name, value] of Object.entries(call.parameters)) params[name] = parameterText(value)
  const changedFields = sortedFields(call)
  return { ...params, ...contextOf(call, apiClaim), ...(changedFields ? { changedFields: changedFields.join(',') } : {}), timestamp: String(unixSeconds(now)) }
}

// Booleans travel as PHP's http_build_query writes them, so `if ($_GET['flag'])` works for providers.
function parameterText(value: unknown): string {
  if (typeof value === 'boolean') return value ? '1' : '0'
  if (value === null || value === undefined) return ''
  return typeof value === 'object' ? JSON.stringify(value) : String(value)
}

export interface CallOptions {
  now: Date
  /** None for a free target: it is the tenant's own and calls back with the tenant's key. */
  apiClaim: string | undefined
  userAgent: string
  timeoutMs: number
}

export function buildRequest(mode: DeliveryMode, call: DeliveryCall, options: CallOptions): HttpRequest {
  return mode === 'json' ? buildJsonRequest(call, options) : buildQueryRequest(call, options)
}

/** `GET webhookUrl?…` signed the onOffice way, with the current secret only (a URL has one signature). */
export function buildQueryRequest(call: DeliveryCall, options: CallOptions): HttpRequest {
  const signed = signQueryUrl(call.webhookUrl, callParameters(call, options.now, options.apiClaim), call.secret)
  return {
    method: 'GET',
    url: signed.url,
    headers: { 'idempotency-key': call.id, 'user-agent': options.userAgent },
    timeoutMs: options.timeoutMs
  }
}

/**
 * `POST webhookUrl` with the context and the step's parameters (typed as saved) as JSON, signed per
 * Standard Webhooks: `webhook-id` is the deliveryId, the same on every retry and replay.
 */
export function buildJsonRequest(call: DeliveryCall, options: CallOptions): HttpRequest {
  const timestamp = unixSeconds(options.now)
  const changedFields = sortedFields(call)
  const body = JSON.stringify({
    ...contextOf(call, options.apiClaim),
    ...(changedFields ? { changedFields } : {}),
    timestamp,
    parameters: call.parameters
  })
  const secrets = call.previousSecret ? [call.secret, call.previousSecret] : [call.secret]
  const signatures = secrets.map((secret) => standardWebhookSignature(secret, call.id, timestamp, body))
  return {
    method: 'POST',
    url: call.webhookUrl,
    headers: {
      'content-type': 'application/json',
      'idempotency-key': call.id,
      'user-agent': options.userAgent,
      'webhook-id': call.id,
      'webhook-timestamp': String(timestamp),
      'webhook-signature': signatures.join(' ')
    },
    body,
    timeoutMs: options.timeoutMs
  }
}
