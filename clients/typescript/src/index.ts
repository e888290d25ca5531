import createClient, { type Client, type ClientOptions } from 'openapi-fetch'
import type { components, operations, paths } from './schema.js'

export type { components, operations, paths }

/** Baton's named schemas: `Schemas['ProcessInstance']`, `Schemas['Problem']`, … */
export type Schemas = components['schemas']
export type StepState = Schemas['ProcessInstanceStep']['state']
export type DeliveryStatus = Schemas['Delivery']['status']
export type InstanceStatus = Schemas['ProcessInstance']['status']

export type BatonClient = Client<paths>

export interface BatonClientOptions extends Omit<ClientOptions, 'baseUrl'> {
  /** Where Baton listens, e.g. http://127.0.0.1:3000 (paths start with /v1). */
  baseUrl: string
  /** The operator key, a tenant's API key or a provider's apiClaim: sent as `Authorization: Bearer <key>`. */
  apiKey: string
}

/** A client whose every call is typed by Baton's OpenAPI document and authenticated with `apiKey`. */
export function createBatonClient({ apiKey, ...options }: BatonClientOptions): BatonClient {
  const client = createClient<paths>(options)
  client.use({
    onRequest({ request }) {
      request.headers.set('authorization', `Bearer ${apiKey}`)
      return request
    }
  })
  return client
}

/**
 * `If-Match` for an update: a resource's `version` (`template.version`) or an ETag as received. A stale one
 * answers 412, whose ETag is the current version: `versionOf(response)`.
 */
export function ifMatch(version: number | string): { 'if-match': string } {
  return { 'if-match': typeof version === 'number' ? `"${version}"` : version }
}

/**
 * `If-None-Match` for a read of a process, a template, a step, a record or a service: the `version` (or the ETag)
 * of the copy a client holds. While it is current the answer is 304 with no body (`response.status === 304`,
 * `data` undefined): keep the copy; otherwise the full 200.
 */
export function ifNoneMatch(version: number | string): { 'if-none-match': string } {
  return { 'if-none-match': typeof version === 'number' ? `"${version}"` : version }
}

/**
 * `Idempotency-Key` for a start, or the create of a property or an address: a retry with the same key
 * answers with what the first request made instead of making a second one.
 */
export function idempotencyKey(key: string = globalThis.crypto.randomUUID()): { 'idempotency-key': string } {
  return { 'idempotency-key': key }
}

/** The version an answer's ETag names: of the resource on success, the current one on a 412. */
export function versionOf(response: Response): number | undefined {
  const match = /^(?:W\/)?"(\d+)"$/.exec(response.headers.get('etag') ?? '')
  return match?.[1] === undefined ? undefined : Number(match[1])
}

/** Whether an answer replays an earlier start or create with the same Idempotency-Key. */
export function isReplay(response: Response): boolean {
  return response.headers.get('idempotent-replayed') === 'true'
}
