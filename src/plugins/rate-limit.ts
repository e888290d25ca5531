import rateLimit, { normalizeIP, type FastifyRateLimitStore } from '@fastify/rate-limit'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { ProblemError } from '../errors.js'
import { CLAIM_PREFIX, isSignedClaim } from '../lib/api-claims.js'
import { bearerOf } from '../lib/bearer.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * false: not counted against a budget (the probes: a load balancer's or kubelet's checks, sharing an
     * address with clients that send no key, must not be answered 429 and take the process out).
     */
    rateLimited?: boolean
  }
}

interface RateLimitOptions {
  /** Requests per window per API key (per client address without one); 0 turns the limit off. */
  max: number
  windowMs: number
  /** Failed authentications per client address per window, before unknown keys are answered 429 unchecked; 0: off. */
  authFailures: number
  /**
   * The key apiClaims are signed with, once the first claim's authentication has loaded it: a claim it
   * did not sign counts against its address, as a request without a key does, and so does any claim
   * before it is loaded (the limit does not wait for the database; authentication does). Without it
   * (tests of the limits alone) every claim counts as a key of its own.
   */
  claimKey?: () => Buffer | undefined
}

/** Keys that authenticated lately, so that a client at a guessing address still gets in. */
const KNOWN_KEYS_KEPT = 10_000
/** Counters kept per limit, the ones used longest ago dropped first. */
const COUNTERS_KEPT = 10_000
/**
 * The windows' times and the known keys', on a timer that only goes forward: on the wall clock (the
 * library's own store) a step back kept a key's budget spent, and an address's failures counted, for as
 * long as the step; and the known keys on the one clock and the failures on the other let a key that
 * worked a moment ago meet the failure limit after a step.
 */
const elapsed = () => performance.now()

/*
 * Two limits, both in this process's memory (ForwardOnlyStore): with N API processes a
 * client gets N times as much. Per key: every request counts against its bearer key (hashed), or
 * against its address when it sends none. Per address: every failed authentication (401) counts, and
 * past the limit a request whose key has not authenticated lately is answered 429 before the key is
 * looked up, so guessing keys costs no database lookup beyond the limit (apiClaims apart, see
 * guardedTokenHash). Both answer 429 with
 * Retry-After, before authentication runs.
 */
async function rateLimitPlugin(app: FastifyInstance, options: RateLimitOptions): Promise<void> {
  await app.register(rateLimit, { global: false, store: ForwardOnlyStore })
  const limitKeyOf = (request: FastifyRequest) => keyOf(request, options.claimKey)
  const perKey = app.createRateLimit({ max: options.max, timeWindow: options.windowMs, keyGenerator: limitKeyOf })
  const failures = app.createRateLimit({ max: options.authFailures, timeWindow: options.windowMs, keyGenerator: (request) => addressOf(request) })
  const knownKeys = new Map<string, number>()

  app.addHook('onRequest', async (request) => {
    if (request.routeOptions.config.rateLimited === false) return
    // The failure limit first: a guess it refuses gets no counter of its own in perKey's store. Counted
    // first, 10,000 guesses from one address pushed every key's counter out, a spent budget included.
    const token = guardedTokenHash(request)
    if (options.authFailures > 0 && token !== undefined && !isKnown(knownKeys, token, options.windowMs)) {
      const failed = await failures(request, { increment: false })
      if (!failed.isAllowed && failed.remaining === 0 && failed.ttl > 0) {
        throw tooMany(failed.ttlInSeconds, `Too many failed authentications from this address; try again in ${failed.ttlInSeconds} s.`)
      }
    }
    if (options.max > 0) {
      const limit = await perKey(request)
      if (!limit.isAllowed && limit.isExceeded) {
        const whose = limitKeyOf(request).startsWith('address:') ? 'without a key from this address' : 'with this key'
        throw tooMany(limit.ttlInSeconds, `More than ${options.max} requests in ${options.windowMs / 1000} s ${whose}.`)
      }
    }
  })

  app.addHook('onResponse', async (request, reply) => {
    const token = guardedTokenHash(request)
    if (token === undefined) return
    if (reply.statusCode === 401) {
      // A key revoked since it worked lately is checked as any other from its first refusal on.
      knownKeys.delete(token)
      if (options.authFailures > 0) await failures(request)
    } else if (request.caller) remember(knownKeys, token)
  })
}

function tooMany(retryAfterSeconds: number, detail: string): ProblemError {
  return new ProblemError(429, 'Too Many Requests', detail, undefined, { 'retry-after': String(Math.max(1, retryAfterSeconds)) })
}

/**
 * The key the failure limit guards, or undefined for an apiClaim: a claim is refused by its signature
 * and expiry, with no lookup, so guessing one costs nothing the limit saves; and each call brings a
 * provider a fresh claim, which its expired ones (a late write-back answers 401) must not lock out.
 */
function guardedTokenHash(request: FastifyRequest): string | undefined {
  const bearer = bearerOf(request)
  return bearer === undefined || bearer.key.startsWith(CLAIM_PREFIX) ? undefined : bearer.hash
}

/**
 * The budget a request counts against: its key's, or its address's when it sends none or an apiClaim
 * Baton did not sign. Counted by their own hashes, forged claims (which the failure limit lets
 * through, see guardedTokenHash) gave a client without a key a new budget per request, and 10,000 of
 * them pushed every key's counter out of the store, a spent budget included.
 */
function keyOf(request: FastifyRequest, claimKey: RateLimitOptions['claimKey']): string {
  const bearer = bearerOf(request)
  if (bearer === undefined) return addressOf(request)
  if (claimKey && bearer.key.startsWith(CLAIM_PREFIX)) {
    const key = claimKey()
    if (key === undefined || !isSignedClaim(bearer.key, key)) return addressOf(request)
  }
  return `key:${bearer.hash}`
}

/**
 * The client's address as the limits count it: an IPv6 client by its /64 (a host has one to itself, so
 * a new address per request would be a new budget), an IPv4-mapped one as its IPv4 address.
 */
function addressOf(request: FastifyRequest): string {
  return `address:${normalizeIP(request.ip, 64)}`
}

function isKnown(known: Map<string, number>, token: string, windowMs: number): boolean {
  const seen = known.get(token)
  return seen !== undefined && elapsed() - seen < windowMs
}

function remember(known: Map<string, number>, token: string): void {
  known.delete(token)
  known.set(token, elapsed())
  // A Map iterates in insertion order: the first key is the one seen longest ago.
  if (known.size > KNOWN_KEYS_KEPT) known.delete(known.keys().next().value!)
}

/**
 * @fastify/rate-limit's LocalStore (fixed windows from each key's first count, the least recently
 * used dropped past COUNTERS_KEPT) on the forward-only timer. Each limit gets its own (child).
 */
class ForwardOnlyStore implements FastifyRateLimitStore {
  private readonly counters = new Map<string, { current: number; startedAt: number }>()

  incr(key: string, callback: (error: Error | null, result?: { current: number; ttl: number }) => void, timeWindow: number): void {
    const now = elapsed()
    let counter = this.counters.get(key)
    if (counter === undefined || counter.startedAt + timeWindow <= now) counter = { current: 1, startedAt: now }
    else counter.current += 1
    this.counters.delete(key)
    this.counters.set(key, counter)
    if (this.counters.size > COUNTERS_KEPT) this.counters.delete(this.counters.keys().next().value!)
    callback(null, { current: counter.current, ttl: timeWindow - (now - counter.startedAt) })
  }

  /** The count without counting (`{ increment: false }`). */
  read(key: string, callback: (error: Error | null, result?: { current: number; ttl: number }) => void, timeWindow: number): void {
    const now = elapsed()
    const counter = this.counters.get(key)
    if (counter === undefined || counter.startedAt + timeWindow <= now) callback(null, { current: 0, ttl: 0 })
    else callback(null, { current: counter.current, ttl: timeWindow - (now - counter.startedAt) })
  }

  child(): FastifyRateLimitStore {
    return new ForwardOnlyStore()
  }
}

export default fp(rateLimitPlugin, { name: 'rate-limit' })
