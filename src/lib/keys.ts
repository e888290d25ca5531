import { hash, randomBytes, timingSafeEqual } from 'node:crypto'

export type KeyKind = 'operator' | 'tenant'

const PREFIX: Record<KeyKind, string> = { operator: 'bop_', tenant: 'btk_' }

/** Whether a key has the prefix of the keys Baton generates of this kind. */
export function hasKeyPrefix(kind: KeyKind, key: string): boolean {
  return key.startsWith(PREFIX[kind])
}

/** A random bearer key; only its hash is ever stored. */
export function generateKey(kind: KeyKind): string {
  return PREFIX[kind] + randomBytes(32).toString('base64url')
}

// Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
export function hashKey(key: string): string {
  return hash('sha256', key, 'hex')
}

export function sameHash(a: string, b: string): boolean {
  const left = Buffer.from(a, 'hex')
  const right = Buffer.from(b, 'hex')
  return left.length === right.length && timingSafeEqual(left, right)
}

export function keyPrefix(key: string): string {
  return key.slice(0, 8)
}
