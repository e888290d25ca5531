// database: the API and two workers reach Postgres through a fault-injecting TCP proxy. Under a
// steady load of starts, every connection is cut and new ones are refused for a while, then the
// database comes back. Promise: no process exits, every 201 start exists afterwards, /health/ready
// is 200 again within 5 s, the scheduler calls again within 10 s, and no 5xx once ready.
import { sql } from '../../src/db/kysely.js'
import { TestProvider } from '../../test/helpers/provider.js'
import { startFaultProxy } from './fault-proxy.js'
import {
  atMost, batonEnv, callsAndAttempts, Cluster, createDrillDatabase, deliveryStatuses, freePort, info, postgresTarget, report, setupTenant, sleep, waitFor
} from './harness.js'

export interface DatabaseOptions {
  /** Seconds of load in all; the outage starts at `outageAtS`. */
  seconds: number
  outageAtS: number
  refuseMs: number
  rate: number
  label: string
}

export const DATABASE_FULL: DatabaseOptions = { seconds: 60, outageAtS: 20, refuseMs: 10_000, rate: 40, label: 'full' }
export const DATABASE_SHORT: DatabaseOptions = { seconds: 24, outageAtS: 6, refuseMs: 10_000, rate: 25, label: 'short' }

interface Answer {
  at: number
  status: number
  id?: string
}

export async function databaseDrill(options: DatabaseOptions): Promise<boolean> {
  const database = await createDrillDatabase()
  const proxy = await startFaultProxy(postgresTarget())
  const provider = await TestProvider.start()
  provider.always({ status: 200, body: 'ok', delayMs: 20 })
  const cluster = new Cluster({ ...batonEnv(proxy.url(database.url)), DATABASE_STATEMENT_TIMEOUT_MS: '3000', DATABASE_CONNECT_TIMEOUT_MS: '2000' })
  await cluster.init()
  try {
    const port = await freePort()
    const apiUrl = `http://127.0.0.1:${port}`
    await cluster.api(port)
    const tenant = await setupTenant(apiUrl, provider)
    const templateId = await tenant.template([{ kind: 'webhook', name: 'Sync the mailing list' }])
    await Promise.all([cluster.worker('worker-1'), cluster.worker('worker-2')])

    const began = Date.now()
    const answers: Answer[] = []
    const total = options.seconds * options.rate
    let next = 0
    const loading = Promise.all(Array.from({ length: 6 }, async () => {
      while (next < total) {
        const index = next++
        await sleep(began + (index * 1000) / options.rate - Date.now())
        answers.push({ at: Date.now(), ...(await tenant.start(templateId)) })
      }
    }))

    await sleep(began + options.outageAtS * 1000 - Date.now())
    const outageAt = Date.now()
    await proxy.refuse(true)
    proxy.cutAll()
    await sleep(options.refuseMs)
    await proxy.refuse(false)
    const backAt = Date.now()
    let readyAt = Infinity
    await waitFor(async () => {
      const status = await fetch(`${apiUrl}/health/ready`).then((r) => r.status, () => 0)
      if (status === 200) readyAt = Date.now()
      return status === 200
    }, 30_000, 50)
    await loading
    const firstCallAfter = provider.calls.find((c) => c.at > backAt)?.at ?? Infinity

    const created = answers.filter((a) => a.status === 201)
    await waitFor(async () => {
      const statuses = await deliveryStatuses(database.handle.db)
      return (statuses.succeeded ?? 0) >= created.length && (statuses.pending ?? 0) + (statuses.running ?? 0) === 0
    }, 90_000, 200)
    const { rows } = await sql<{ id: string }>`select id from process_instances`.execute(database.handle.db)
    const existing = new Set(rows.map((r) => r.id))
    const statuses = await deliveryStatuses(database.handle.db)
    let unlogged = 0
    let repeated = 0
    for (const { calls, attempts } of (await callsAndAttempts(database.handle.db, provider)).values()) {
      unlogged += Math.max(0, calls - attempts.length)
      repeated += Math.max(0, calls - 1 - attempts.filter((a) => a === 'aborted').length)
    }
    const during = answers.filter((a) => a.at >= outageAt && a.at < readyAt)
    const afterReady = answers.filter((a) => a.at >= readyAt)

    return report(`drill database (${options.label}): API + 2 workers through a proxy; at ${options.outageAtS} s every connection cut, then refused ${options.refuseMs / 1000} s, under ${options.rate} starts/s`, [
      info('starts answered 201', created.length),
      info('starts answered 503 during the outage', during.filter((a) => a.status === 503).length),
      atMost('starts answered 500 or no answer, ever', answers.filter((a) => a.status === 0 || (a.status >= 500 && a.status !== 503)).length, 0),
      atMost('201 starts missing afterwards', created.filter((a) => !existing.has(a.id!)).length, 0),
      atMost('ready again after the database returned', Math.round(readyAt - backAt), 5000, ' ms'),
      atMost('first call after the database returned', Math.round(firstCallAfter - backAt), 10_000, ' ms'),
      atMost('5xx after ready again', afterReady.filter((a) => a.status >= 500 || a.status === 0).length, 0),
      atMost('stuck deliveries at the end', (statuses.pending ?? 0) + (statuses.running ?? 0) + (statuses.failed ?? 0), 0),
      atMost('calls missing from the attempt log', unlogged, 0),
      atMost('duplicated calls (beyond aborted attempts)', repeated, 0),
      atMost('processes that exited', cluster.unexpectedExits(new Set()).length, 0)
    ])
  } catch (error) {
    process.stderr.write(`${cluster.logs()}\n`)
    throw error
  } finally {
    await cluster.close()
    await proxy.close()
    await provider.close()
    await database.drop()
  }
}
