import { createHmac, timingSafeEqual } from 'node:crypto'

/*
 * The apiClaim: a short-lived bearer token Baton hands a provider with each call, so the provider can
 * read and update the records the call names, for that tenant only. It is `bcl_<payload>.<mac>`:
 * the payload is base64url JSON, the mac a base64url HMAC-SHA256 of `bcl_<payload>` with a key that
 * only Baton holds. Nothing is stored per token; the expiry is inside the signed payload.
 */

export const CLAIM_PREFIX = 'bcl_'

export interface ApiClaim {
  tenantId: string
  serviceId: string
  deliveryId: string
  propertyId: string | null
  addressId: string | null
  /** Unix seconds after which the claim is refused. */
  expiresAt: number
  /**
   * The tenant's activation of the service the claim was issued under, as its activated_at in ms: a
   * deactivation and a new activation withdraw it. Absent from the claims of Baton before December 2026.
   */
  activatedAt?: number
}

interface Payload {
  v: 1
  t: string
  s: string
  d: string
  p: string | null
  a: string | null
  exp: number
  act?: number
}

export function signClaim(claim: ApiClaim, key: Buffer): string {
  const payload: Payload = {
    v: 1, t: claim.tenantId, s: claim.serviceId, d: claim.deliveryId, p: claim.propertyId, a: claim.addressId, exp: claim.expiresAt,
    ...(claim.activatedAt === undefined ? {} : { act: claim.activatedAt })
  }
  const body = `${CLAIM_PREFIX}${Buffer.from(JSON.stringify(payload)).toString('base64url')}`
  return `${body}.${mac(body, key)}`
}

export type ClaimCheck =
  | { ok: true; claim: ApiClaim }
  | { ok: false; reason: 'invalid' }
  | { ok: false; reason: 'expired'; expiredAt: Date }

/** Checks the mac first (in constant time), then the expiry; a token that fails either is refused. */
export function verifyClaim(token: string, key: Buffer, now: Date): ClaimCheck {
  if (!isSignedClaim(token, key)) return { ok: false, reason: 'invalid' }
  const payload = parse(token.slice(CLAIM_PREFIX.length, token.lastIndexOf('.')))
  if (!payload) return { ok: false, reason: 'invalid' }
  if (now.getTime() >= payload.exp * 1000) return { ok: false, reason: 'expired', expiredAt: new Date(payload.exp * 1000) }
  return {
    ok: true,
    claim: { tenantId: payload.t, serviceId: payload.s, deliveryId: payload.d, propertyId: payload.p, addressId: payload.a, expiresAt: payload.exp,
      ...(payload.act === undefined ? {} : { activatedAt: payload.act }) }
  }
}

/** Whether the token is a claim this key signed (in constant time), expired or not: Baton's own, not a forgery. */
export function isSignedClaim(token: string, key: Buffer): boolean {
  const dot = token.lastIndexOf('.')
  if (!token.startsWith(CLAIM_PREFIX) || dot < 0) return false
  const expected = Buffer.from(mac(token.slice(0, dot), key))
  const given = Buffer.from(token.slice(dot + 1))
  return given.length === expected.length && timingSafeEqual(given, expected)
}

/**
 * Why the claim no longer lets its provider in, or undefined while it does: its service must be active
 * and activated by the tenant (`service` as the tenant sees it, undefined when gone), under the same
 * activation as when the claim was issued (a deactivation withdraws it, also once activated again).
 */
export function claimWithdrawn(claim: Pick<ApiClaim, 'activatedAt'>, service: { active: boolean; activated_at: Date | null } | undefined): string | undefined {
  if (!service?.active || !service.activated_at) return 'The service this apiClaim was issued to is no longer active for the tenant.'
  if (claim.activatedAt !== undefined && service.activated_at.getTime() !== claim.activatedAt) {
    return 'The tenant deactivated the service this apiClaim was issued to after issuing it; the next call brings a fresh one.'
  }
  return undefined
}

function mac(text: string, key: Buffer): string {
  return createHmac('sha256', key).update(text).digest('base64url')
}

function parse(text: string): Payload | undefined {
  try {
    const value = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as Partial<Payload>
    const id = (v: unknown) => typeof v === 'string'
    const optionalId = (v: unknown) => v === null || typeof v === 'string'
    if (value.v !== 1 || !id(value.t) || !id(value.s) || !id(value.d) || !optionalId(value.p) || !optionalId(value.a) || typeof value.exp !== 'number'
      || (value.act !== undefined && typeof value.act !== 'number')) {
      return undefined
    }
    return value as Payload
  } catch {
    return undefined
  }
}
