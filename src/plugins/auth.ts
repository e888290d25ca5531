import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Clock } from '../adapters/clock.js'
import type { DB } from '../db/connect.js'
import { forbidden, unauthorized } from '../errors.js'
import { CLAIM_PREFIX, claimWithdrawn, verifyClaim, type ApiClaim } from '../lib/api-claims.js'
import { bearerOf, type Bearer } from '../lib/bearer.js'
import type { KnownKeys } from '../modules/auth/known-keys.js'
import type { OperatorKeyHash } from '../modules/auth/operator-key-hash.js'
import { findTenantIdByKeyHash } from '../modules/auth/repository.js'
import { findServiceForTenant } from '../modules/marketplace/activations/repository.js'

/**
 * Who may call a route: the operator, a tenant's key, either of them (`any`), or anyone.
 * Routes default to `tenant`.
 */
type Audience = 'operator' | 'tenant' | 'any' | 'public'

type Caller = { kind: 'operator' } | { kind: 'tenant'; tenantId: string } | { kind: 'claim'; tenantId: string; claim: ApiClaim }

/** The record kinds a provider may read and update with the apiClaim of a call that names the record. */
export type ClaimScope = 'property' | 'address'

declare module 'fastify' {
  interface FastifyContextConfig {
    auth?: Audience
    /** A tenant route that also takes an apiClaim, for the record in its `:id`. */
    claim?: ClaimScope
  }
  interface FastifyRequest {
    caller: Caller | null
  }
}

interface AuthOptions {
  db: DB
  operatorKeyHash: OperatorKeyHash
  claimKey: () => Promise<Buffer>
  clock: Clock
  /** Tenant keys verified lately (see KnownKeys for when a revocation takes effect). */
  knownKeys: KnownKeys
}

async function authPlugin(app: FastifyInstance, options: AuthOptions): Promise<void> {
  app.decorateRequest('caller', null)

  app.addHook('onRequest', async (request) => {
    const audience = request.routeOptions.config.auth ?? 'tenant'
    if (audience === 'public' || request.is404) return
    const caller = await identify(options, bearerToken(request))
    if (caller.kind === 'claim') checkClaimScope(caller.claim, request)
    else if (audience === 'operator' && caller.kind !== 'operator') throw forbidden('This route needs the operator key.')
    else if (audience === 'tenant' && caller.kind !== 'tenant') throw forbidden('This route needs a tenant API key.')
    request.caller = caller
  })
}

/** A claim reaches only the claim routes, and there only the records its call named. */
function checkClaimScope(claim: ApiClaim, request: FastifyRequest): void {
  const scope = request.routeOptions.config.claim
  const id = (request.params as { id?: string }).id
  const named = scope === 'property' ? claim.propertyId : scope === 'address' ? claim.addressId : undefined
  if (!scope || named === undefined) {
    throw forbidden('An apiClaim may only read and update the records its call names (GET and PATCH /v1/properties/{id} or /v1/addresses/{id}).')
  }
  // Before validation, which lowers an id given in upper case (src/plugins/validation.ts): compared here as Baton writes ids.
  if (named === null || id?.toLowerCase() !== named) throw forbidden(`This apiClaim does not name ${scope} ${id}.`)
}

function bearerToken(request: FastifyRequest): Bearer {
  const bearer = bearerOf(request)
  if (!bearer) throw unauthorized('Send an API key as "Authorization: Bearer <key>".')
  return bearer
}

async function identify({ db, operatorKeyHash, claimKey, clock, knownKeys }: AuthOptions, { key: token, hash }: Bearer): Promise<Caller> {
  if (token.startsWith(CLAIM_PREFIX)) {
    const check = verifyClaim(token, await claimKey(), clock.now())
    if (check.ok) {
      const withdrawn = claimWithdrawn(check.claim, await findServiceForTenant(db, check.claim.tenantId, check.claim.serviceId))
      if (withdrawn) throw forbidden(withdrawn)
      return { kind: 'claim', tenantId: check.claim.tenantId, claim: check.claim }
    }
    if (check.reason === 'expired') {
      throw unauthorized(`The apiClaim expired at ${check.expiredAt.toISOString()}; each call brings a fresh one.`)
    }
    throw unauthorized('The apiClaim is not valid: it was altered or not issued by this Baton.')
  }
  const operator = operatorKeyHash.matches(token, hash)
  if (typeof operator === 'boolean' ? operator : await operator) return { kind: 'operator' }
  const known = knownKeys.tenantOf(hash)
  if (known) return { kind: 'tenant', tenantId: known }
  const lookup = knownKeys.startLookup()
  const tenantId = await findTenantIdByKeyHash(db, hash)
  if (tenantId) {
    knownKeys.remember(hash, tenantId, lookup)
    return { kind: 'tenant', tenantId }
  }
  throw unauthorized('The API key is unknown or has been revoked.')
}

/** The calling tenant's id, or undefined for the operator (on `any` routes). */
export function tenantOrOperator(request: FastifyRequest): string | undefined {
  if (request.caller?.kind === 'claim') throw forbidden('An apiClaim may only read and update the records its call names.')
  return request.caller?.kind === 'tenant' ? request.caller.tenantId : undefined
}

/** The calling tenant's id; only valid on tenant routes, where the hook has checked the key. */
export function tenantOf(request: FastifyRequest): string {
  if (request.caller?.kind !== 'tenant' && request.caller?.kind !== 'claim') throw forbidden('This route needs a tenant API key.')
  return request.caller.tenantId
}

/** The claim the request came with, on the routes that take one. */
export function claimOf(request: FastifyRequest): ApiClaim | undefined {
  return request.caller?.kind === 'claim' ? request.caller.claim : undefined
}

export default fp(authPlugin, { name: 'auth' })
