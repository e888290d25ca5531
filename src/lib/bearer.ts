import type { FastifyRequest } from 'fastify'
import { hashKey } from './keys.js'

export interface Bearer {
  key: string
  /** hashKey(key): what the tenant's key is stored as, and what the rate limits count by. */
  hash: string
}

const BEARER = /^Bearer\s+(\S+)\s*$/i
const bearers = new WeakMap<FastifyRequest, Bearer | null>()

/**
 * The key a request sends as "Authorization: Bearer <key>", with its hash, or undefined: worked out
 * once a request, for the rate limits (before and after it) and the authentication alike.
 */
export function bearerOf(request: FastifyRequest): Bearer | undefined {
  let bearer = bearers.get(request)
  if (bearer === undefined) {
    const header = request.headers.authorization
    const key = header === undefined ? undefined : BEARER.exec(header)?.[1]
    bearer = key === undefined ? null : { key, hash: hashKey(key) }
    bearers.set(request, bearer)
  }
  return bearer ?? undefined
}
