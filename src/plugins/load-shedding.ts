import underPressure from '@fastify/under-pressure'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { ProblemError } from '../errors.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** false: answered even when the server sheds load (liveness must not fail because the server is busy). */
    shedLoad?: boolean
  }
}

interface LoadSheddingOptions {
  /** Mean event-loop delay over a second, in ms, past which requests are refused; 0: not checked. */
  maxEventLoopDelayMs: number
  /** Event-loop utilisation (0-1) over the last second past which requests are refused; 0: not checked. */
  maxEventLoopUtilization: number
}

/** How often @fastify/under-pressure samples the event loop, in ms. */
const SAMPLE_MS = 1000
/** How long a client waits before it tries again. */
const RETRY_AFTER_SECONDS = 5

/**
 * When the event loop is saturated, new requests are answered 503 with Retry-After at once, before
 * authentication or the database, instead of queueing behind the work that saturates it.
 * @fastify/under-pressure samples the loop; the decision is taken here, so that the samples taken
 * while the app was still compiling its routes (a second or more of delay) shed nothing.
 */
async function loadSheddingPlugin(app: FastifyInstance, options: LoadSheddingOptions): Promise<void> {
  if (options.maxEventLoopDelayMs === 0 && options.maxEventLoopUtilization === 0) return
  await app.register(underPressure, { sampleInterval: SAMPLE_MS, eventLoopUtilizationMode: 'interval' })
  // On a timer that only goes forward: on the wall clock, a step back after the start shed nothing for as long as the step.
  let watchFrom = Number.POSITIVE_INFINITY
  app.addHook('onReady', async () => {
    watchFrom = performance.now() + 2 * SAMPLE_MS
  })
  app.addHook('onRequest', async (request) => {
    if (performance.now() < watchFrom || request.routeOptions.config.shedLoad === false) return
    const pressure = overload(app.memoryUsage(), options)
    if (pressure) {
      throw new ProblemError(503, 'Service Unavailable', `The server is too busy to take this request (${pressure}); try again shortly.`,
        undefined, { 'retry-after': String(RETRY_AFTER_SECONDS) })
    }
  })
}

function overload(sample: { eventLoopDelay: number; eventLoopUtilized: number }, options: LoadSheddingOptions): string | undefined {
  if (options.maxEventLoopDelayMs > 0 && sample.eventLoopDelay > options.maxEventLoopDelayMs) {
    return `event-loop delay ${Math.round(sample.eventLoopDelay)} ms`
  }
  if (options.maxEventLoopUtilization > 0 && sample.eventLoopUtilized > options.maxEventLoopUtilization) {
    return `event-loop utilisation ${sample.eventLoopUtilized.toFixed(2)}`
  }
  return undefined
}

export default fp(loadSheddingPlugin, { name: 'load-shedding' })
