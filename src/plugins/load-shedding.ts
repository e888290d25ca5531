import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
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

/** How often the event loop is sampled, in ms. */
const SAMPLE_MS = 1000
/** The delay histogram's resolution, in ms, taken off its mean (a loop with nothing to do reads about this much). */
const RESOLUTION_MS = 10
/** How long a client waits before it tries again. */
const RETRY_AFTER_SECONDS = 5

/**
 * When the event loop is saturated, new requests are answered 503 with Retry-After at once, before
 * authentication or the database, instead of queueing behind the work that saturates it. The
 * samples taken while the app was still compiling its routes (a second or more of delay) shed nothing.
 */
async function loadSheddingPlugin(app: FastifyInstance, options: LoadSheddingOptions): Promise<void> {
  if (options.maxEventLoopDelayMs === 0 && options.maxEventLoopUtilization === 0) return
  const sampler = eventLoopSampler()
  app.addHook('onClose', async () => sampler.stop())
  // On a timer that only goes forward: on the wall clock, a step back after the start shed nothing for as long as the step.
  let watchFrom = Number.POSITIVE_INFINITY
  app.addHook('onReady', async () => {
    watchFrom = performance.now() + 2 * SAMPLE_MS
  })
  app.addHook('onRequest', async (request) => {
    if (performance.now() < watchFrom || request.routeOptions.config.shedLoad === false) return
    const pressure = overload(sampler.sample, options)
    if (pressure) {
      throw new ProblemError(503, 'Service Unavailable', `The server is too busy to take this request (${pressure}); try again shortly.`,
        undefined, { 'retry-after': String(RETRY_AFTER_SECONDS) })
    }
  })
}

interface LoopSample {
  /** The mean delay over the last sample, in ms, less the resolution. */
  eventLoopDelay: number
  /** The loop's utilisation over the last sample, 0 to 1. */
  eventLoopUtilized: number
}

/**
 * The event loop's delay and utilisation over each SAMPLE_MS, as @fastify/under-pressure measured them
 * (in its 'interval' mode). It is not used any more: its timer read the process's memory too
 * (process.memoryUsage, which opens /proc/self/stat), and past the open-files limit (EMFILE) that threw
 * from the timer and took the whole API down, where the requests themselves answered 503. Nothing here
 * needs a file descriptor.
 */
function eventLoopSampler(): { sample: LoopSample; stop(): void } {
  const histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
  histogram.enable()
  let utilization = performance.eventLoopUtilization()
  const sample: LoopSample = { eventLoopDelay: 0, eventLoopUtilized: 0 }
  const timer = setInterval(() => {
    const mean = histogram.mean / 1e6 - RESOLUTION_MS
    // No delay recorded in the sample (a loop blocked for all of it): as long as can be.
    sample.eventLoopDelay = Number.isNaN(mean) ? Number.POSITIVE_INFINITY : Math.max(0, mean)
    histogram.reset()
    const now = performance.eventLoopUtilization()
    sample.eventLoopUtilized = performance.eventLoopUtilization(now, utilization).utilization
    utilization = now
  }, SAMPLE_MS)
  timer.unref()
  return {
    sample,
    stop() {
      clearInterval(timer)
      histogram.disable()
    }
  }
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
