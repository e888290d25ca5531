// hang: providers that hang until the timeout beside one that answers. Four hosts' calls hang, each at
// most WEBHOOK_PER_HOST_CONCURRENCY (2) open at once across the two workers, each worker making at
// most SCHEDULER_CONCURRENCY (8) calls: their open calls take 8 places of 16, and the calls waiting
// for their slots take none. Promise: the answering host's calls, due after every hanging one, are all
// made before the first hanging call times out, each once; the hanging calls give up after their one
// attempt, each called once.
import { TestProvider } from '../../test/helpers/provider.js'
import {
  atMost, batonEnv, callsAndAttempts, Cluster, createDrillDatabase, deliveryStatuses, freePort, info, report, setupTenant, waitFor
} from './harness.js'

export interface HangOptions {
  /** Hosts whose calls hang until the timeout. */
  hangingHosts: number
  /** Processes calling each hanging host, started first. */
  hangingCalls: number
  /** Processes calling the answering host, started after. */
  answeredCalls: number
  timeoutMs: number
  label: string
}

export const HANG_FULL: HangOptions = { hangingHosts: 4, hangingCalls: 8, answeredCalls: 300, timeoutMs: 10_000, label: 'full' }
export const HANG_SHORT: HangOptions = { hangingHosts: 4, hangingCalls: 8, answeredCalls: 100, timeoutMs: 6000, label: 'short' }

export async function hangDrill(options: HangOptions): Promise<boolean> {
  const database = await createDrillDatabase()
  const answering = await TestProvider.start()
  answering.always({ status: 200, body: 'ok', delayMs: 5 })
  const hanging = await Promise.all(Array.from({ length: options.hangingHosts }, () => TestProvider.start()))
  // Longer than the timeout: Baton ends each call.
  for (const provider of hanging) provider.always({ status: 200, body: 'late', delayMs: options.timeoutMs * 4 })
  const cluster = new Cluster({
    ...batonEnv(database.url),
    SCHEDULER_CONCURRENCY: '8',
    WEBHOOK_PER_HOST_CONCURRENCY: '2',
    WEBHOOK_TIMEOUT_MS: String(options.timeoutMs),
    WEBHOOK_MAX_ATTEMPTS: '1',
    SCHEDULER_LEASE_MS: String(options.timeoutMs * 20)
  })
  await cluster.init()
  try {
    const db = database.handle.db
    const port = await freePort()
    await cluster.api(port)
    const tenant = await setupTenant(`http://127.0.0.1:${port}`, answering)
    const hangingTemplates = []
    for (const provider of hanging) {
      const serviceId = await tenant.service(provider)
      hangingTemplates.push(await tenant.template([{ kind: 'webhook', name: 'Ask the hanging provider', serviceId }]))
    }
    const answeredTemplate = await tenant.template([{ kind: 'webhook', name: 'Ask the answering provider' }])
    let refusedStarts = 0
    for (let i = 0; i < options.hangingCalls; i++) {
      for (const templateId of hangingTemplates) if ((await tenant.start(templateId)).status !== 201) refusedStarts++
    }
    for (let i = 0; i < options.answeredCalls; i++) if ((await tenant.start(answeredTemplate)).status !== 201) refusedStarts++
    const hangingTotal = options.hangingHosts * options.hangingCalls
    const total = hangingTotal + options.answeredCalls

    await Promise.all([cluster.worker('worker-1'), cluster.worker('worker-2')])
    await waitFor(async () => answering.calls.length >= options.answeredCalls, 60_000, 20)
    const firstHanging = Math.min(...hanging.flatMap((p) => p.calls.map((c) => c.at)))
    const lastAnswered = Math.max(...answering.calls.map((c) => c.at))
    // Every hanging call times out after its one attempt, and its step fails.
    await waitFor(async () => {
      const statuses = await deliveryStatuses(db)
      return (statuses.succeeded ?? 0) + (statuses.failed ?? 0) >= total
    }, options.timeoutMs * (Math.ceil(options.hangingCalls / 2) + 4), 200)
    const statuses = await deliveryStatuses(db)
    const repeats = async (provider: TestProvider) => {
      let repeated = 0
      for (const { calls } of (await callsAndAttempts(db, provider)).values()) repeated += Math.max(0, calls - 1)
      return repeated
    }
    let hangingRepeated = 0
    for (const provider of hanging) hangingRepeated += await repeats(provider)
    const hangingCalled = hanging.reduce((n, p) => n + new Set(p.calls.map((c) => c.query.deliveryId)).size, 0)

    return report(`drill hang (${options.label}): ${options.hangingHosts} hosts hang past the ${options.timeoutMs} ms timeout with ${hangingTotal} calls, then ${options.answeredCalls} calls to a host that answers; 2 workers of 8 places, 2 calls a host`, [
      atMost('starts not answered 201', refusedStarts, 0),
      info('first answered call after the first hanging one', `${Math.min(...answering.calls.map((c) => c.at)) - firstHanging} ms`),
      atMost('last answered call after the first hanging one', lastAnswered - firstHanging, options.timeoutMs, ' ms'),
      atMost('answered calls made twice', await repeats(answering), 0),
      atMost('answered deliveries not succeeded', options.answeredCalls - (statuses.succeeded ?? 0), 0),
      atMost('hanging calls not made', hangingTotal - hangingCalled, 0),
      atMost('hanging calls made twice', hangingRepeated, 0),
      atMost('hanging deliveries not failed after their attempt', hangingTotal - (statuses.failed ?? 0), 0)
    ])
  } catch (error) {
    process.stderr.write(`${cluster.logs()}\n`)
    throw error
  } finally {
    await cluster.close()
    await answering.close()
    for (const provider of hanging) await provider.close()
    await database.drop()
  }
}
