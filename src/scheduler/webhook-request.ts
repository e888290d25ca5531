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
 * fields that are present, set on `into` in this order. `changedFields` and `timestamp` are typed per
 * scheme by the builders.
 */
function addContext(into: Record<string, unknown>, call: DeliveryCall, apiClaim: string | undefined): void {
  const put = (name: string, value: string | null | undefined) => {
    if (value !== null && value !== undefined) into[name] = value
  }
  put('customerWebId', call.customerWebId)
  put('customerName', call.customerName)
  put('userId', call.assigneeUserId)
  put('estateId', call.propertyId)
  put('addressId', call.addressId)
  put('processId', call.instanceId)
  put('stepId', call.stepId)
  put('deliveryId', call.id)
  put('event', call.event)
  put('apiClaim', apiClaim)
}

const unixSeconds = (now: Date) => Math.floor(now.getTime() / 1000)
const sortedFields = (call: DeliveryCall) => (call.changedFields ? [...call.changedFields].sort() : undefined)

/** The query parameters of a call, context after them; the step's own parameters never override context. */
function callParameters(call: DeliveryCall, now: Date, apiClaim: string | undefined): Record<string, string> {
  const params: Record<string, string> = {}
  for (const name of Object.keys(call.parameters)) params[name] = parameterText(call.parameters[name])
  addContext(params, call, apiClaim)
  const changedFields = sortedFields(call)
  if (changedFields) params.changedFields = changedFields.join(',')
  params.timestamp = String(unixSeconds(now))
  return params
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
function buildJsonRequest(call: DeliveryCall, options: CallOptions): HttpRequest {
  const timestamp = unixSeconds(options.now)
  const changedFields = sortedFields(call)
  const fields: Record<string, unknown> = {}
  addContext(fields, call, options.apiClaim)
  if (changedFields) fields.changedFields = changedFields
  fields.timestamp = timestamp
  fields.parameters = call.parameters
  const body = JSON.stringify(fields)
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
