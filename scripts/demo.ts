// `npm run demo`: Baton on a fresh embedded database and two sample providers on loopback, then the
// marketplace loop: a price change → the valuation provider writes marketValue back with its
// apiClaim → that change calls the newsletter provider; then a process whose webhook step does it again;
// then a template that starts itself when the property's status becomes "sold".
import { spawn, type ChildProcess } from 'node:child_process'
import type { EventEmitter } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startNewsletterProvider, type NewsletterProvider, type Sync } from '../examples/providers/newsletter.js'
import { startValuationProvider, type ValuationProvider, type WriteBack } from '../examples/providers/valuation.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const TIMEOUT_MS = Number(process.env.DEMO_TIMEOUT_MS ?? 120_000)
const began = Date.now()

const say = (line: string) => process.stdout.write(`${((Date.now() - began) / 1000).toFixed(1).padStart(6)}s  ${line}\n`)
const heading = (line: string) => process.stdout.write(`\n== ${line}\n`)

interface Baton {
  url: string
  operatorKey: string
  output(): string
  stop(): Promise<void>
}

/**
 * Runs the server as `npm start` does (scripts/start.mjs: the sources compiled, run by plain node), on a
 * fresh data folder; resolves once it listens.
 */
async function startBaton(dataDir: string): Promise<Baton> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NODE_ENV: 'development',
    HOST: '127.0.0.1',
    PORT: '0',
    BATON_DATA_DIR: dataDir,
    WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true',
    LOG_LEVEL: 'info',
    // No load balancer waits for its 503 at the demo's end.
    SHUTDOWN_DELAY_MS: '0'
  }
  for (const name of ['DATABASE_URL', 'BATON_ADMIN_TOKEN', 'SMTP_URL']) delete env[name]
  const child = spawn(process.execPath, ['scripts/start.mjs'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let text = ''
  child.stdout.on('data', (chunk: Buffer) => (text += chunk.toString()))
  child.stderr.on('data', (chunk: Buffer) => (text += chunk.toString()))
  const baton = { url: '', operatorKey: '', output: () => text, stop: () => stopChild(child) }
  cleanups.push(baton.stop)
  await until(() => {
    if (child.exitCode !== null) throw new Error(`Baton exited (${child.exitCode}) before it listened`)
    return /export BATON_ADMIN_TOKEN=\S+/.test(text) && /Baton listening on http:\/\/[^"\s]+/.test(text)
  }, 'Baton to start')
  baton.url = text.match(/Baton listening on (http:\/\/[^"\s]+)/)![1]!
  baton.operatorKey = text.match(/export BATON_ADMIN_TOKEN=(\S+)/)![1]!
  return baton
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
  await exited
  clearTimeout(timer)
}

const cleanups: (() => Promise<void>)[] = []
const deadline = began + TIMEOUT_MS

async function until(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${TIMEOUT_MS / 1000} s waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** The next event of that name whose value passes the test; a provider's 'error' or the deadline rejects. */
function next<T>(events: EventEmitter, name: string, test: (value: T) => boolean, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`timed out after ${TIMEOUT_MS / 1000} s waiting for ${what}`)), Math.max(0, deadline - Date.now()))
    const onValue = (value: T) => test(value) && done(undefined, value)
    const done = (error?: unknown, value?: T) => {
      clearTimeout(timer)
      events.off(name, onValue).off('error', done)
      if (error) reject(error instanceof Error ? error : new Error(String(error)))
      else resolve(value!)
    }
    events.on(name, onValue).on('error', done)
  })
}

type Api = (method: string, path: string, body?: unknown, headers?: Record<string, string>) => Promise<Record<string, unknown> & { id: string }>

function client(baseUrl: string, key: string): Api {
  return async (method, path, body, headers = {}) => {
    const response = await fetch(`${baseUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body)
    })
    const text = await response.text()
    if (!response.ok) throw new Error(`${method} ${path} answered ${response.status}: ${text}`)
    return (text ? JSON.parse(text) : {}) as Record<string, unknown> & { id: string }
  }
}

interface World {
  tenant: Api
  propertyId: string
  templateId: string
  userId: string
}

/** The operator lists both services with their triggers; a tenant activates them and adds a user, a template and a property. */
async function seed(baton: Baton, valuation: ValuationProvider, newsletter: NewsletterProvider): Promise<World> {
  const operator = client(baton.url, baton.operatorKey)
  const tenantId = (await operator('POST', '/v1/tenants', { name: 'Muster Immobilien GmbH', webId: '48213', timeZone: 'Europe/Berlin' })).id
  const tenant = client(baton.url, String((await operator('POST', `/v1/tenants/${tenantId}/api-keys`, { name: 'demo' })).key))
  const user = await tenant('POST', '/v1/users', { name: 'Anna Berg', email: 'anna@example.com' })
  say(`tenant "Muster Immobilien GmbH" (webId 48213) with a key, and a user, Anna Berg`)

  const valuationService = await operator('POST', '/v1/marketplace-services',
    { name: 'Valuation', provider: 'ValueCo', webhookUrl: `${valuation.url}/hooks/valuation`, delivery: 'query' })
  valuation.secret = String(valuationService.secret)
  await operator('POST', `/v1/marketplace-services/${valuationService.id}/parameters`,
    { name: 'mode', label: 'Mode', type: 'enum', allowedValues: ['quick', 'full'], required: false })
  await operator('POST', `/v1/marketplace-services/${valuationService.id}/triggers`, { module: 'property', events: ['update'], fields: ['price', 'livingArea'] })
  say(`service "Valuation" by ValueCo: query delivery to ${valuation.url}/hooks/valuation, trigger on price and livingArea`)

  const newsletterService = await operator('POST', '/v1/marketplace-services',
    { name: 'Newsletter sync', provider: 'ListCo', webhookUrl: `${newsletter.url}/hooks/newsletter`, delivery: 'json' })
  newsletter.secret = String(newsletterService.secret)
  await operator('POST', `/v1/marketplace-services/${newsletterService.id}/triggers`, { module: 'property', events: ['update'], fields: ['marketValue'] })
  say(`service "Newsletter sync" by ListCo: json delivery to ${newsletter.url}/hooks/newsletter, trigger on marketValue`)

  await tenant('PUT', `/v1/marketplace-services/${valuationService.id}/activation`)
  await tenant('PUT', `/v1/marketplace-services/${newsletterService.id}/activation`)
  say('the tenant activated both services')

  const templateId = await seedTemplate(tenant, user.id, valuationService.id)
  const property = await tenant('POST', '/v1/properties', { maintainerUserId: user.id, fields: { street: 'Lindenweg 3', city: 'Köln', price: 450000, livingArea: 96 } })
  say(`property ${property.id}: Lindenweg 3, price 450000, livingArea 96, maintained by Anna Berg`)
  return { tenant, propertyId: property.id, templateId, userId: user.id }
}

async function seedTemplate(tenant: Api, userId: string, serviceId: string): Promise<string> {
  const template = await tenant('POST', '/v1/process-templates', { name: 'Re-value a property', controllerUserId: userId })
  const refersTo = { property: true, address: false }
  await tenant('POST', `/v1/process-templates/${template.id}/steps`, {
    kind: 'webhook', name: 'Ask ValueCo for a full valuation', start: { mode: 'afterPrevious' }, responsibility: 'propertyMaintainer',
    refersTo, serviceId, parameters: { mode: 'full' }
  })
  await tenant('POST', `/v1/process-templates/${template.id}/steps`, {
    kind: 'task', name: 'Call the owner with the new value', start: { mode: 'afterPrevious' }, responsibility: 'propertyMaintainer', refersTo
  })
  const { version } = await tenant('GET', `/v1/process-templates/${template.id}`)
  await tenant('PATCH', `/v1/process-templates/${template.id}`, { active: true }, { 'if-match': `"${String(version)}"` })
  say('template "Re-value a property": a webhook step (ValueCo, mode=full), then a task for the maintainer')
  return template.id
}

/** A price change: the valuation trigger fires, ValueCo writes marketValue back, that change calls ListCo. */
async function priceChangeLoop(world: World, valuation: ValuationProvider, newsletter: NewsletterProvider): Promise<void> {
  heading('2. The price changes; watch the loop')
  const valued = next<WriteBack>(valuation.events, 'writeBack', (w) => w.estateId === world.propertyId && !w.processId, 'ValueCo to write back')
  const synced = next<Sync>(newsletter.events, 'sync', (s) => s.estateId === world.propertyId, 'ListCo to be called')
  say(`tenant     -> PATCH /v1/properties/${world.propertyId} {"fields":{"price":475000}}`)
  await world.tenant('PATCH', `/v1/properties/${world.propertyId}`, { fields: { price: 475000 } })
  const written = await valued
  say(`Baton      marketValue changed to ${written.marketValue}: the newsletter trigger on marketValue fires`)
  await synced
  say('the loop is closed: price → valuation → write-back → newsletter')
}

/** The template's webhook step calls ValueCo with mode=full; its write-back calls ListCo once more. */
async function processLoop(world: World, valuation: ValuationProvider, newsletter: NewsletterProvider): Promise<void> {
  heading('3. A process: the template\'s webhook step asks for a full valuation')
  const synced = next<Sync>(newsletter.events, 'sync', (s) => s.estateId === world.propertyId, 'ListCo to be called again')
  const instance = await world.tenant('POST', '/v1/process-instances', { templateId: world.templateId, responsibleUserId: world.userId, propertyId: world.propertyId })
  say(`tenant     -> POST /v1/process-instances: process ${instance.id} started`)
  const written = await next<WriteBack>(valuation.events, 'writeBack', (w) => w.processId === instance.id, 'ValueCo to answer the step')
  say(`Baton      marketValue changed to ${written.marketValue}: the newsletter trigger fires again`)
  await synced
  let steps: { name: string; state: string }[] = []
  await until(async () => {
    steps = (await world.tenant('GET', `/v1/process-instances/${instance.id}`)).steps as typeof steps
    return steps[0]?.state === 'done'
  }, 'the webhook step to end')
  say(`process    ${steps.map((s, i) => `step ${i + 1} "${s.name}": ${s.state}`).join('; ')}`)
}

/** A template with autostart on the property's status becoming "sold" starts a process when the tenant writes that status. */
async function autostartLoop(world: World): Promise<void> {
  heading('4. Autostart: a template starts itself when the property is sold')
  const autostart = { on: 'fieldChanged', record: 'property', field: 'status', filter: { eq: 'sold' }, responsible: 'maintainer' }
  const template = await world.tenant('POST', '/v1/process-templates', { name: 'Hand over a sold property', controllerUserId: world.userId, autostart })
  await world.tenant('POST', `/v1/process-templates/${template.id}/steps`, {
    kind: 'task', name: 'Hand over the keys', responsibility: 'propertyMaintainer', refersTo: { property: true, address: false }
  })
  const { version } = await world.tenant('GET', `/v1/process-templates/${template.id}`)
  await world.tenant('PATCH', `/v1/process-templates/${template.id}`, { active: true }, { 'if-match': `"${String(version)}"` })
  say(`template "Hand over a sold property" (a task for the maintainer), autostart ${JSON.stringify(autostart)}`)
  say(`tenant     -> PATCH /v1/properties/${world.propertyId} {"fields":{"status":"sold"}}`)
  await world.tenant('PATCH', `/v1/properties/${world.propertyId}`, { fields: { status: 'sold' } })
  const { items } = await world.tenant('GET', `/v1/process-templates/${template.id}/autostart-runs`)
  const [run] = items as { outcome: string; occurrence: string; instanceId: string | null; reason: string | null }[]
  if (!run?.instanceId) throw new Error(`the autostart did not start a process: ${JSON.stringify(run)}`)
  say(`Baton      autostart run ${run.occurrence}: ${run.outcome}, process ${run.instanceId} (GET …/autostart-runs)`)
  const instance = await world.tenant('GET', `/v1/process-instances/${run.instanceId}`)
  const step = (instance.steps as { name: string; state: string; assigneeUserId: string }[])[0]!
  say(`process    "${String(instance.templateName)}" ${String(instance.status)}; step 1 "${step.name}": ${step.state}, assigned to Anna Berg`)
}

async function printActivities(world: World): Promise<void> {
  heading(`5. The property's activities (GET /v1/properties/${world.propertyId}/activities)`)
  const { items } = await world.tenant('GET', `/v1/properties/${world.propertyId}/activities`)
  for (const activity of [...(items as { createdAt: string; message: string }[])].reverse()) {
    process.stdout.write(`        ${activity.createdAt.slice(11, 19)}  ${activity.message}\n`)
  }
  const { fields } = await world.tenant('GET', `/v1/properties/${world.propertyId}`)
  process.stdout.write(`\n        fields now: ${JSON.stringify(fields)}\n`)
}

async function main(): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-demo-'))
  cleanups.push(() => rm(dataDir, { recursive: true, force: true }))
  heading('1. Baton on a fresh embedded database, two providers on loopback')
  say('starting Baton (npm start on an empty data folder; the first start takes about 10 s)…')
  const baton = await startBaton(dataDir)
  say(`Baton listens on ${baton.url}; the operator key it printed is used to seed`)
  try {
    const valuation = await startValuationProvider(baton.url, say)
    const newsletter = await startNewsletterProvider(baton.url, say)
    cleanups.push(valuation.close, newsletter.close)
    say(`ValueCo listens on ${valuation.url}, ListCo on ${newsletter.url}`)
    const world = await seed(baton, valuation, newsletter)
    await priceChangeLoop(world, valuation, newsletter)
    await processLoop(world, valuation, newsletter)
    await autostartLoop(world)
    await printActivities(world)
  } catch (error) {
    process.stderr.write(`\nBaton's log (last lines):\n${baton.output().split('\n').slice(-30).join('\n')}\n`)
    throw error
  }
  process.stdout.write(`\nDemo complete in ${((Date.now() - began) / 1000).toFixed(1)} s: the loop ran end to end.\n`)
}

async function cleanUp(): Promise<void> {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
}

process.once('SIGINT', () => void cleanUp().then(() => process.exit(130)))

try {
  await main()
  await cleanUp()
  process.exit(0)
} catch (error) {
  process.stderr.write(`\nThe demo did not complete: ${error instanceof Error ? error.message : String(error)}\n`)
  await cleanUp()
  process.exit(1)
}
