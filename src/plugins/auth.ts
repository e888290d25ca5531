import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { DB } from '../db/connect.js'
import { forbidden, unauthorized } from '../errors.js'
import { hashKey, sameHash } from '../lib/keys.js'
import { findTenantIdByKeyHash } from '../modules/auth/repository.js'

/**
 * Who may call a route: the operator, a tenant's key, either of them (`any`), or anyone.
 * Routes default to `tenant`.
 */
export type Audience = 'operator' | 'tenant' | 'any' | 'public'

export type Caller = { kind: 'operator' } | { kind: 'tenant'; tenantId: string }

declare module 'fastify' {
  interface FastifyContextConfig {
    auth?: Audience
  }
  interface FastifyRequest {
    caller: Caller | null
  }
}

export interface AuthOptions {
  db: DB
  operatorKeyHash: string
}

async function authPlugin(app: FastifyInstance, { db, operatorKeyHash }: AuthOptions): Promise<void> {
  app.decorateRequest('caller', null)

  app.addHook('onRequest', async (request) => {
    const audience = request.routeOptions.config.auth ?? 'tenant'
    if (audience === 'public' || request.is404) return
    const caller = await identify(db, operatorKeyHash, bearerToken(request))
    if (audience === 'operator' && caller.kind !== 'operator') throw forbidden('This route needs the operator key.')
    if (audience === 'tenant' && caller.kind !== 'tenant') throw forbidden('This route needs a tenant API key.')
    request.caller = caller
  })
}

function bearerToken(request: FastifyRequest): string {
  const header = request.headers.authorization
  const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header)
  if (!match?.[1]) throw unauthorized('Send an API key as "Authorization: Bearer <key>".')
  return match[1]
}

async function identify(db: DB, operatorKeyHash: string, token: string): Promise<Caller> {
  const hash = hashKey(token)
  if (sameHash(hash, operatorKeyHash)) return { kind: 'operator' }
  const tenantId = await findTenantIdByKeyHash(db, hash)
  if (tenantId) return { kind: 'tenant', tenantId }
  throw unauthorized('The API key is unknown or has been revoked.')
}

/** The calling tenant's id, or undefined for the operator (on `any` routes). */
export function tenantOrOperator(request: FastifyRequest): string | undefined {
  return request.caller?.kind === 'tenant' ? request.caller.tenantId : undefined
}

/** The calling tenant's id; only valid on tenant routes, where the hook has checked the key. */
export function tenantOf(request: FastifyRequest): string {
  if (request.caller?.kind !== 'tenant') throw forbidden('This route needs a tenant API key.')
  return request.caller.tenantId
}

export default fp(authPlugin, { name: 'auth' })
