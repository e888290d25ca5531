import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import pino from 'pino'
import t from 'tap'
import { buildApp, serverOptions } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { generateKey, hashKey } from '../../src/lib/keys.js'
import { BatonMetrics } from '../../src/lib/metrics.js'
import { logOptions } from '../../src/log-options.js'
import { client } from '../helpers/app.js'
import { TestClock } from '../helpers/clock.js'
import { createTestDatabase, databaseUrl } from '../helpers/database.js'
import { runScript } from '../helpers/process.js'
import { TestProvider } from '../helpers/provider.js'

// Keys, secrets, claims and signatures never reach the logs, even at the most talkative level.
t.test('a server at LOG_LEVEL=trace logs no key, secret, apiClaim or signature', async (t) => {
  const db = await createTestDatabase()
  const dataDir = await mkdtemp(join(tmpdir(), 'baton-logs-'))
  const provider = await TestProvider.start()
  t.teardown(async () => {
    await provider.close()
    await db.drop()
    await rm(dataDir, { recursive: true, force: true })
  })
  const operatorKey = `bop_${'x'.repeat(40)}`
  const server = runScript('src/server.ts', {
    DATABASE_URL: databaseUrl(db.name), BATON_DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'trace', BATON_ADMIN_TOKEN: operatorKey,
    WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true', SMTP_URL: '', SCHEDULER_POLL_INTERVAL_MS: '100', SHUTDOWN_DELAY_MS: '0'
  }, [])
  t.teardown(async () => {
    if (server.child.exitCode === null) server.child.kill('SIGKILL')
    await server.exited
  })
  const [, address] = await server.waitFor(/Baton listening on (http:\/\/[^"\s]+)/, 60_000)
  const call = async (key: string, method: string, path: string, body?: unknown) => {
    const response = await fetch(`${address}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
    return { status: response.status, data: await response.json() as Record<string, string> }
  }

  const tenant = await call(operatorKey, 'POST', '/v1/tenants', { name: 'Logs GmbH', webId: 'logs1' })
  const tenantKey = (await call(operatorKey, 'POST', `/v1/tenants/${tenant.data.id}/api-keys`, { name: 'crm' })).data.key!
  const service = await call(operatorKey, 'POST', '/v1/marketplace-services', { name: 'Valuation', provider: 'ValueCo', webhookUrl: `${provider.url}/hook` })
  await call(operatorKey, 'POST', `/v1/marketplace-services/${service.data.id}/triggers`, { module: 'property', events: ['create'], fields: ['price'] })
  await call(tenantKey, 'PUT', `/v1/marketplace-services/${service.data.id}/activation`)
  const targetSecret = `whsec_${randomBytes(32).toString('base64')}`
  const template = await call(tenantKey, 'POST', '/v1/process-templates', { name: 'Own hooks' })
  const step = await call(tenantKey, 'POST', `/v1/process-templates/${template.data.id}/steps`,
    { kind: 'webhook', name: 'Own CRM', target: { url: `${provider.url}/own`, secret: targetSecret, delivery: 'json' } })
  t.equal(step.status, 201)
  t.equal((await call(tenantKey, 'PATCH', `/v1/process-templates/${template.data.id}/steps/${step.data.id}`,
    { target: { url: `${provider.url}/own2`, secret: targetSecret } })).status, 200)
  provider.always({ status: 503, body: 'busy' })
  const property = await call(tenantKey, 'POST', '/v1/properties', { fields: { price: 1 } })
  t.equal(property.status, 201)

  const deadline = Date.now() + 20_000
  while (provider.calls.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
  const [received] = provider.calls
  t.ok(received, 'the worker called the provider')
  const { apiClaim = '', signature = '' } = received!.query
  t.equal((await call(apiClaim, 'PATCH', `/v1/properties/${property.data.id}`, { fields: { marketValue: 2 } })).status, 200)
  t.equal((await call(apiClaim, 'GET', '/v1/users')).status, 403)
  t.equal((await call(`${apiClaim}x`, 'GET', `/v1/properties/${property.data.id}`)).status, 401)
  t.equal((await call(`${tenantKey}x`, 'GET', '/v1/users')).status, 401)
  // A client that puts its key or claim in the query string by mistake: Baton reads none there, and logs none.
  const queryToken = randomBytes(24).toString('hex')
  t.equal((await fetch(`${address}/v1/properties/${property.data.id}?apiClaim=${apiClaim}`)).status, 401)
  t.equal((await fetch(`${address}/v1/users?key=${tenantKey}&limit=5`)).status, 401)
  t.equal((await fetch(`${address}/v1/tenants?access_token=${queryToken}`)).status, 401)
  t.equal((await fetch(`${address}/v1/users/${operatorKey}`)).status, 401)
  // Percent-encoded, as a client escaping a whole value sends it.
  t.equal((await fetch(`${address}/v1/users?filter=${encodeURIComponent(tenantKey).replace('_', '%5F')}`)).status, 401)
  // Escaped after an escaped character (a quote, a space): no word boundary before the key's prefix.
  t.equal((await fetch(`${address}/v1/users?filter=${encodeURIComponent(`"${tenantKey}"`)}`)).status, 401)
  await new Promise((resolve) => setTimeout(resolve, 300))
  server.child.kill('SIGTERM')
  await server.exited

  const output = server.output()
  t.match(output, /"msg":"incoming request"/, 'requests were logged')
  for (const [what, secret] of [
    ['the operator key', operatorKey], ['the tenant key', tenantKey], ['the tenant key, escaped', tenantKey.slice('btk_'.length)], ['the service secret', service.data.secret!],
    ['a free target\'s secret', targetSecret], ['a token in a query string', queryToken],
    ['the apiClaim', apiClaim], ['the apiClaim payload', apiClaim.split('.')[0]!], ['the signature', signature]
  ] as const) {
    t.ok(secret.length > 20, `${what} is known to the test`)
    t.notOk(output.includes(secret), `${what} is not in the log`)
  }
})

// Refused requests too: a 400, 412 or 422 to a body holding a secret echoes none of it, in the answer or the log.
t.test('requests refused with a secret in their body echo it neither in the problem nor in the log', async (t) => {
  const database = await createTestDatabase()
  const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'trace', PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0' })
  const lines: string[] = []
  const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => { lines.push(String(chunk)); done() } })
  const operatorKey = generateKey('operator')
  const app = await buildApp({ config, db: database.db, operatorKeyHash: hashKey(operatorKey), clock: new TestClock(), metrics: new BatonMetrics() },
    serverOptions(config, pino(logOptions(config, false), sink)))
  await app.ready()
  t.teardown(async () => {
    await app.close()
    await database.drop()
  })
  const operator = client(app, operatorKey)
  const good = `whsec_${randomBytes(32).toString('base64')}`
  const long = randomBytes(24).toString('base64url')
  const short = randomBytes(15).toString('hex').slice(0, 20)
  const service = { name: 'Valuation', provider: 'ValueCo', webhookUrl: 'https://provider.example/hook' }
  const created = await operator.post('/v1/marketplace-services', { ...service, secret: good })
  t.equal(created.statusCode, 201)
  const tenant = (await operator.post('/v1/tenants', { name: 'Refused GmbH', webId: 'refused1' })).data
  const tenantKey = (await operator.post(`/v1/tenants/${tenant.id}/api-keys`, { name: 'crm' })).data.key as string
  const api = client(app, tenantKey)
  const template = (await api.post('/v1/process-templates', { name: 'Own hooks' })).data
  const step = (target: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    api.post(`/v1/process-templates/${template.id}/steps`, { kind: 'webhook', name: 'Own CRM', target: { delivery: 'json', ...target }, ...extra })

  const refused = [
    await operator.post('/v1/marketplace-services', { ...service, webhookUrl: 'http://127.0.0.1/hook', secret: good }),
    await operator.post('/v1/marketplace-services', { ...service, secret: short }),
    await operator.post('/v1/marketplace-services', { ...service, secret: long.repeat(12) }),
    await operator.post('/v1/marketplace-services', { ...service, secret: [long] }),
    await operator.post('/v1/marketplace-services', { ...service, secret: `enc:${long}` }),
    await operator.patch(`/v1/marketplace-services/${created.data.id}`, { secret: long }, { 'if-match': '"99"' }),
    await operator.patch(`/v1/marketplace-services/${created.data.id}`, { secret: long, delivery: 'neither' }),
    await step({ url: 'http://10.0.0.1/hook', secret: long }),
    await step({ url: 'https://crm.example/hook', secret: short }),
    await step({ url: 'https://crm.example/hook', secret: long }, { serviceId: created.data.id }),
    await step({ url: 'https://crm.example/hook', secret: long, note: 'extra' }),
    await step({ url: 'https://crm.example/hook?a.b=1', secret: long, delivery: 'query' }),
    await api.post('/v1/users', { name: tenantKey, email: 'not an address' }),
    await app.inject({ method: 'POST', url: '/v1/marketplace-services', headers: { authorization: `Bearer ${operatorKey}`, 'content-type': 'application/json' },
      payload: `{"name":"V","provider":"P","webhookUrl":"https://provider.example/hook","secret":"${long}",}` })
  ]
  for (const response of refused) t.ok(response.statusCode >= 400 && response.statusCode < 500, `${response.statusCode} ${response.body.slice(0, 120)}`)
  t.ok(lines.length > refused.length, 'the requests were logged')
  const answers = refused.map((r) => r.body).join('\n')
  const log = lines.join('')
  for (const [what, secret] of [['a service secret', good], ['a secret', long], ['a weak secret', short], ['the tenant key', tenantKey], ['the operator key', operatorKey]] as const) {
    t.notOk(answers.includes(secret), `${what} is in no answer`)
    t.notOk(log.includes(secret), `${what} is not in the log`)
  }
})
