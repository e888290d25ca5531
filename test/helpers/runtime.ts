import type { Test } from 'tap'
import { createHttpClient } from '../../src/adapters/http-client.js'
import { createMailer } from '../../src/adapters/mailer.js'
import { openPostgres } from '../../src/db/connect.js'
import type { Logger } from '../../src/lib/logger.js'
import { createSecretBox } from '../../src/lib/secret-box.js'
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from '../../src/scheduler/retry-policy.js'
import { createScheduler, type Scheduler, type SchedulerDeps, type SchedulerSettings } from '../../src/scheduler/scheduler.js'
import { setupApp, type Client, type TenantFixture, type TestContext } from './app.js'
import { TestProvider } from './provider.js'
import { TestSmtpServer } from './smtp.js'

/** Steps as the template API takes them; a webhook step without serviceId or target calls the fixture's service. */
export type StepInput = Record<string, unknown>

export interface RuntimeContext extends TestContext, Processes {
  tenant: { id: string; webId: string; key: string; client: Client }
  api: Client
  provider: TestProvider
  smtp: TestSmtpServer
  serviceId: string
  secret: string
  controller: { id: string; email: string }
  worker: { id: string; email: string }
  propertyId: string
  scheduler: Scheduler
  /** Another scheduler on the same database, as a second worker process would be; `deps` replaces its parts. */
  newScheduler(overrides?: Partial<SchedulerSettings>, log?: Logger, deps?: Partial<SchedulerDeps>): Scheduler
  /** Another tenant set up as the first (a controller, a worker, a property, the service activated), with processes of its own. */
  newRuntimeTenant(name: string): Promise<RuntimeTenant>
}

/** A tenant's processes, as the runtime's tenant and those of newRuntimeTenant have them. */
export interface Processes {
  /** An active template with these steps; returns its id. */
  template(steps: StepInput[], options?: { notifyOnCompletion?: boolean }): Promise<string>
  start(templateId: string, extra?: Record<string, unknown>): Promise<InstanceView>
  instance(id: string): Promise<InstanceView>
}

export interface RuntimeTenant extends Processes {
  tenant: TenantFixture
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests read JSON freely
export type InstanceView = any

const QUIET: Logger = { info() {}, warn() {}, error() {} }

export const FAST_RETRIES: RetryPolicy = { ...DEFAULT_RETRY_POLICY, jitter: 0 }

/**
 * A tenant with a controller, a worker, a property, an activated webhook service backed by a real
 * provider on 127.0.0.1, an SMTP server, and a scheduler driven by the test clock.
 */
export async function setupRuntime(
  t: Test,
  options: { webhookTimeoutMs?: number; maxAttempts?: number; secretsKey?: string; env?: Record<string, string>; databaseSettings?: Record<string, string>; databaseMade?: string } = {}
): Promise<RuntimeContext> {
  // The provider listens on 127.0.0.1: the API lets such targets be stored, as in development.
  const ctx = await setupApp(t, {
    WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true', ...(options.secretsKey ? { BATON_SECRETS_KEY: options.secretsKey } : {}), ...options.env
  }, options.databaseSettings, options.databaseMade)
  const secrets = createSecretBox(options.secretsKey)
  const [provider, smtp] = await Promise.all([TestProvider.start(), TestSmtpServer.start()])
  // A setup that fails (a database whose settings break the API) closes them itself: the test's end waits for them.
  const { service, first } = await (async () => {
    const service = await ctx.operator.post('/v1/marketplace-services', { name: 'Valuation', provider: 'ValueCo', webhookUrl: `${provider.url}/hooks/valuation?v=2` })
    if (service.statusCode !== 201) throw new Error(`service: ${service.body}`)
    provider.secret = service.data.secret
    await ctx.operator.post(`/v1/marketplace-services/${service.data.id}/parameters`,
      { name: 'mode', label: 'Mode', type: 'enum', allowedValues: ['quick', 'full'], required: false, default: 'full' })
    return { service, first: await runtimeTenant(ctx, 'Muster Immobilien', service.data.id) }
  })().catch(async (error: unknown) => {
    await Promise.all([provider.close(), smtp.close()])
    throw error
  })

  const http = createHttpClient({ maxBodyBytes: 65536, maxSockets: 32, userAgent: 'Baton/test', allowPrivateNetworks: true })
  const mailer = createMailer({ smtpUrl: smtp.url, mailDir: '', timeoutMs: 2000 })
  const newScheduler = (overrides: Partial<SchedulerSettings> = {}, log: Logger = QUIET, deps: Partial<SchedulerDeps> = {}) => createScheduler({
    db: ctx.db,
    clock: ctx.clock,
    http,
    mailer,
    log,
    workerId: `test-${Math.random().toString(36).slice(2, 8)}`,
    secrets,
    settings: {
      pollIntervalMs: 50,
      batchSize: 100,
      concurrency: 16,
      leaseMs: 60_000,
      timeoutMs: options.webhookTimeoutMs ?? 2000,
      mailFrom: 'Baton <baton@example.com>',
      userAgent: 'Baton/test',
      policy: { ...FAST_RETRIES, maxAttempts: options.maxAttempts ?? FAST_RETRIES.maxAttempts },
      claimTtlMs: 15 * 60_000,
      ...overrides
    },
    metrics: ctx.metrics,
    ...deps
  })
  t.teardown(async () => {
    http.close()
    mailer.close()
    await Promise.all([provider.close(), smtp.close()])
  })

  return {
    ...ctx,
    ...first,
    api: first.tenant.client,
    provider,
    smtp,
    serviceId: service.data.id,
    secret: service.data.secret,
    scheduler: newScheduler(),
    newScheduler,
    newRuntimeTenant: (name) => runtimeTenant(ctx, name, service.data.id)
  }
}

/** A tenant with a controller, a worker, a property and the service activated, and its processes. */
async function runtimeTenant(ctx: TestContext, name: string, serviceId: string): Promise<RuntimeTenant & RuntimePeople> {
  const tenant = await ctx.newTenant({ name, timeZone: 'Europe/Berlin' })
  const api = tenant.client
  await api.put(`/v1/marketplace-services/${serviceId}/activation`)
  const controller = (await api.post('/v1/users', { name: 'Clara Controller', email: 'clara@example.com' })).data
  const worker = (await api.post('/v1/users', { name: 'Willi Worker', email: 'willi@example.com' })).data
  const property = (await api.post('/v1/properties', { maintainerUserId: worker.id, fields: { price: 450000, street: 'Hauptstraße 1' } })).data
  return {
    tenant,
    controller,
    worker,
    propertyId: property.id,
    async template(steps, templateOptions = {}) {
      const created = await api.post('/v1/process-templates', {
        name: 'Re-value a property', controllerUserId: controller.id, notifyOnCompletion: templateOptions.notifyOnCompletion ?? false
      })
      if (created.statusCode !== 201) throw new Error(`template: ${created.body}`)
      for (const step of steps) {
        const body: StepInput = { start: { mode: 'afterPrevious' }, responsibility: 'processResponsible', ...step }
        if (body.kind === 'webhook' && !('serviceId' in step) && !('target' in step)) Object.assign(body, { serviceId })
        const added = await api.post(`/v1/process-templates/${created.data.id}/steps`, body)
        if (added.statusCode !== 201) throw new Error(`step: ${added.body}`)
      }
      const current = await api.get(`/v1/process-templates/${created.data.id}`)
      const activated = await api.patch(`/v1/process-templates/${created.data.id}`, { active: true }, { 'if-match': `"${current.data.version}"` })
      if (activated.statusCode !== 200) throw new Error(`activate: ${activated.body}`)
      return created.data.id
    },
    async start(templateId, extra = {}) {
      const started = await api.post('/v1/process-instances', { templateId, responsibleUserId: worker.id, propertyId: property.id, ...extra })
      if (started.statusCode !== 201) throw new Error(`start: ${started.body}`)
      return started.data
    },
    async instance(id) {
      return (await api.get(`/v1/process-instances/${id}`)).data
    }
  }
}

interface RuntimePeople {
  controller: { id: string; email: string }
  worker: { id: string; email: string }
  propertyId: string
}

/**
 * A scheduler with a per-host limit, its slots held on a connection of its own (as a worker's are),
 * stopped with the test.
 */
export function hostLimitedScheduler(
  t: Test, rt: RuntimeContext, settings: { perHostConcurrency: number; concurrency: number; pollIntervalMs?: number }, poolMax = 2
): Scheduler {
  const slots = openPostgres(rt.databaseUrl, { poolMax })
  const scheduler = rt.newScheduler(settings, undefined, { session: () => slots.session({ timeouts: true }) })
  t.teardown(async () => {
    await scheduler.stop(1000)
    await slots.close()
  })
  return scheduler
}
