import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
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
  await new Promise((resolve) => setTimeout(resolve, 300))
  server.child.kill('SIGTERM')
  await server.exited

  const output = server.output()
  t.match(output, /"msg":"incoming request"/, 'requests were logged')
  for (const [what, secret] of [
    ['the operator key', operatorKey], ['the tenant key', tenantKey], ['the service secret', service.data.secret!],
    ['a free target\'s secret', targetSecret], ['a token in a query string', queryToken],
    ['the apiClaim', apiClaim], ['the apiClaim payload', apiClaim.split('.')[0]!], ['the signature', signature]
  ] as const) {
    t.ok(secret.length > 20, `${what} is known to the test`)
    t.notOk(output.includes(secret), `${what} is not in the log`)
  }
})
