import type { HttpRequest } from '../adapters/http-client.js'
import type { JsonObject } from '../db/database.js'
import { signQueryUrl } from './signature.js'

/** What a claimed delivery knows about its call. */
export interface DeliveryCall {
  id: string
  webhookUrl: string
  secret: string
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

/** The query parameters of a call, context first; the step's own parameters never override context. */
export function callParameters(call: DeliveryCall, now: Date): Record<string, string> {
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
    changedFields: call.changedFields ? [...call.changedFields].sort().join(',') : null,
    timestamp: String(Math.floor(now.getTime() / 1000))
  }
  const params: Record<string, string> = {}
  for (const [name, value] of Object.entries(call.parameters)) params[name] = parameterText(value)
  for (const [name, value] of Object.entries(context)) if (value !== null) params[name] = value
  return params
}

// Booleans travel as PHP's http_build_query writes them, so `if ($_GET['flag'])` works for providers.
function parameterText(value: unknown): string {
  if (typeof value === 'boolean') return value ? '1' : '0'
  if (value === null || value === undefined) return ''
  return typeof value === 'object' ? JSON.stringify(value) : String(value)
}

export function buildQueryRequest(call: DeliveryCall, now: Date, userAgent: string, timeoutMs: number): HttpRequest {
  const signed = signQueryUrl(call.webhookUrl, callParameters(call, now), call.secret)
  return {
    method: 'GET',
    url: signed.url,
    headers: { 'idempotency-key': call.id, 'user-agent': userAgent },
    timeoutMs
  }
}
