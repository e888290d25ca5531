import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { setupApp, type Client, type Response } from '../helpers/app.js'

// If-None-Match on the reads that answer an ETag (RFC 9110 13.1.2): a client polling with the ETag it holds
// gets 304 and no body until the resource changes. One app and one tenant for the file.

const ctx = await setupApp(t)
const tenant = await ctx.newTenant()
const api = tenant.client
const auth = { authorization: `Bearer ${tenant.key}` }

async function created(response: Promise<Response>): Promise<Response> {
  const answer = await response
  if (answer.statusCode !== 201) throw new Error(`fixture: ${answer.statusCode} ${answer.body}`)
  return answer
}

/** An active template of two tasks and a process started from it. */
async function startProcess(client: Client): Promise<{ templateId: string; instanceId: string }> {
  const user = await created(client.post('/v1/users', { name: 'Anna', email: 'anna@polled.example' }))
  const template = await created(client.post('/v1/process-templates', { name: `Polled ${Date.now()}` }))
  await created(client.post(`/v1/process-templates/${template.data.id}/steps`, { kind: 'task', name: 'Call the owner' }))
  await created(client.post(`/v1/process-templates/${template.data.id}/steps`, { kind: 'task', name: 'Write the report' }))
  const activated = await client.patch(`/v1/process-templates/${template.data.id}`, { active: true })
  if (activated.statusCode !== 200) throw new Error(`fixture: ${activated.body}`)
  const instance = await created(client.post('/v1/process-instances', { templateId: template.data.id, responsibleUserId: user.data.id }))
  return { templateId: template.data.id, instanceId: instance.data.id }
}

const { templateId, instanceId } = await startProcess(api)
const processUrl = `/v1/process-instances/${instanceId}`
const templateUrl = `/v1/process-templates/${templateId}`

function assertNotModified(t: Test, response: Response, etag: string, what: string): void {
  t.equal(response.statusCode, 304, `${what}: 304`)
  t.equal(response.body, '', `${what}: no body`)
  t.equal(response.headers.etag, etag, `${what}: the ETag stays`)
  t.notOk(response.headers['content-type'], `${what}: no Content-Type`)
  t.notOk(response.headers['content-length'], `${what}: no Content-Length`)
  t.ok(response.headers['x-request-id'], `${what}: the other headers stay`)
}

t.test('a GET naming the current ETag answers 304 without a body; a stale one or a change answers 200', async (t) => {
  for (const url of [processUrl, templateUrl]) {
    const first = await api.get(url)
    t.equal(first.statusCode, 200)
    const etag = String(first.headers.etag)
    t.equal(etag, `"${first.data.version}"`)

    assertNotModified(t, await api.get(url, { 'if-none-match': etag }), etag, `${url} with its ETag`)
    assertNotModified(t, await api.get(url, { 'if-none-match': `W/${etag}` }), etag, `${url} with its weak ETag`)
    assertNotModified(t, await api.get(url, { 'if-none-match': `"999999", ${etag}` }), etag, `${url} with a list naming it`)
    assertNotModified(t, await api.get(url, { 'if-none-match': '*' }), etag, `${url} with *`)
    assertNotModified(t, await api.get(url, { 'if-none-match': etag.slice(1, -1) }), etag, `${url} with its bare version, as If-Match takes it`)

    const stale = await api.get(url, { 'if-none-match': `"${first.data.version - 1}", "999999"` })
    t.equal(stale.statusCode, 200, 'a list of other versions answers the resource')
    t.same(stale.data, first.data)
    t.equal(stale.headers.etag, etag)
  }

  const before = await api.get(processUrl)
  const advanced = await api.post(`${processUrl}/advance`, { outcome: 'done' })
  t.equal(advanced.statusCode, 200, advanced.body)
  const after = await api.get(processUrl, { 'if-none-match': String(before.headers.etag) })
  t.equal(after.statusCode, 200, 'the ETag from before the advance is stale')
  t.equal(after.headers.etag, `"${advanced.data.version}"`, 'the answer carries the new ETag')
  t.not(after.headers.etag, before.headers.etag)
  t.equal(after.data.steps[0].status, advanced.data.steps[0].status)
  assertNotModified(t, await api.get(processUrl, { 'if-none-match': String(after.headers.etag) }), String(after.headers.etag), 'the new ETag')

  const template = await api.get(templateUrl)
  const renamed = await api.patch(templateUrl, { name: 'Polled, renamed' }, { 'if-match': String(template.headers.etag) })
  t.equal(renamed.statusCode, 200, renamed.body)
  const changed = await api.get(templateUrl, { 'if-none-match': String(template.headers.etag) })
  t.equal(changed.statusCode, 200, 'a renamed template answers again')
  t.equal(changed.data.name, 'Polled, renamed')
  t.equal(changed.headers.etag, renamed.headers.etag)
})

t.test('an If-None-Match that does not parse names nothing: the full 200, never a 500', async (t) => {
  const current = await api.get(processUrl)
  const etag = String(current.headers.etag)
  const version = etag.slice(1, -1)
  for (const header of ['garbage', `"${version}" "x"`, `${etag}; q=1`, '"abc"', `"${'9'.repeat(400)}"`, ',,,', `*, ${etag}`, `"0${version}"`,
    `"${version}`, `${version}"`, `W/"${version}`, `"999999", "${version}`]) {
    const response = await api.get(processUrl, { 'if-none-match': header })
    t.equal(response.statusCode, 200, JSON.stringify(header))
    t.same(response.data, current.data)
    t.equal(response.headers.etag, etag)
  }
})

t.test('HEAD answers 304 as GET does; other methods, answers without an ETag and problems ignore If-None-Match', async (t) => {
  const current = await api.get(templateUrl)
  const etag = String(current.headers.etag)
  const head = await ctx.app.inject({ method: 'HEAD', url: templateUrl, headers: { authorization: `Bearer ${(await ctx.newTenant()).key}` } })
  t.equal(head.statusCode, 404, 'HEAD of another tenant\'s template: 404')

  const ownHead = (headers: Record<string, string>) => ctx.app.inject({ method: 'HEAD', url: templateUrl, headers: { ...auth, ...headers } })
  const plain = await ownHead({})
  t.equal(plain.statusCode, 200)
  t.equal(plain.headers['content-length'], String(Buffer.byteLength(current.body)), 'a HEAD says the size of the body')
  const notModified = await ownHead({ 'if-none-match': etag })
  assertNotModified(t, Object.assign(notModified, { data: undefined }), etag, 'HEAD with the ETag')
  t.equal((await ownHead({ 'if-none-match': '"999999"' })).statusCode, 200, 'HEAD with another version')

  const update = await api.patch(templateUrl, { description: 'Polled by a test' }, { 'if-none-match': etag })
  t.equal(update.statusCode, 200, 'a PATCH ignores If-None-Match')
  t.ok(update.data, 'and answers its body')
  const advance = await api.post(`${processUrl}/advance`, { outcome: 'skipped' }, { 'if-none-match': '*' })
  t.equal(advance.statusCode, 200, 'a POST ignores If-None-Match: *')

  const list = await api.get('/v1/process-templates', { 'if-none-match': '*' })
  t.equal(list.statusCode, 200, 'a list has no ETag: * names no representation of it')
  t.ok(list.data.items.length > 0)
  const missing = await api.get('/v1/process-templates/00000000-0000-4000-8000-000000000000', { 'if-none-match': '*' })
  t.equal(missing.statusCode, 404, 'a missing resource answers its 404')
})

t.test('a tenant\'s reads may be kept by its own cache only, revalidated before each use; writes\' answers by none', async (t) => {
  const read = await api.get(templateUrl)
  t.equal(read.headers['cache-control'], 'private, no-cache', 'a read with an ETag')
  const etag = String(read.headers.etag)
  const revalidated = await api.get(templateUrl, { 'if-none-match': etag })
  t.equal(revalidated.statusCode, 304)
  t.equal(revalidated.headers['cache-control'], 'private, no-cache', 'a 304 carries the 200\'s Cache-Control (RFC 9110 15.4.5)')
  const head = await ctx.app.inject({ method: 'HEAD', url: templateUrl, headers: auth })
  t.equal(head.headers['cache-control'], 'private, no-cache', 'HEAD')
  t.equal((await api.get('/v1/process-templates')).headers['cache-control'], 'private, no-cache', 'a list, without an ETag')
  t.equal((await ctx.anonymous.get(templateUrl)).headers['cache-control'], 'private, no-cache', 'a 401 to a read')
  t.equal((await ctx.operator.get('/v1/tenants')).headers['cache-control'], 'private, no-cache', 'the operator\'s reads')

  const key = await ctx.operator.post(`/v1/tenants/${tenant.id}/api-keys`, {})
  t.equal(key.statusCode, 201, key.body)
  t.equal(key.headers['cache-control'], 'no-store', 'an API key, shown once, is stored by no cache')
  const renamed = await api.patch(templateUrl, { name: 'Cached nowhere' })
  t.equal(renamed.statusCode, 200, renamed.body)
  t.equal(renamed.headers['cache-control'], 'no-store', 'an update\'s answer')
  t.notOk((await api.get('/v1/nothing-here')).headers['cache-control'], 'an unknown route sets none')
})

t.test('over a real connection a 304 carries no body, no Content-Length and no Transfer-Encoding', async (t) => {
  const address = await ctx.app.listen({ port: 0, host: '127.0.0.1' })
  t.ok(address)
  const { port } = ctx.app.server.address() as AddressInfo
  const etag = String((await api.get(processUrl)).headers.etag)
  for (const method of ['GET', 'HEAD']) {
    const { status, headers, body } = await new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
      const request = httpRequest({ host: '127.0.0.1', port, method, path: processUrl, headers: { ...auth, 'if-none-match': etag } }, (response) => {
        let body = ''
        response.setEncoding('utf8').on('data', (chunk: string) => { body += chunk }).on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body }))
      })
      request.on('error', reject).end()
    })
    t.equal(status, 304, method)
    t.equal(body, '')
    t.equal(headers.etag, etag)
    t.notOk(headers['content-type'])
    t.notOk(headers['content-length'])
    t.notOk(headers['transfer-encoding'])
  }
})

// A tenant's answer for a service shows whether that tenant activated it, which moves no version of the
// service (one for every tenant): a poll with the ETag held was told 304 after an activation.
t.test('a service as a tenant sees it is answered in full whatever If-None-Match says; the operator\'s view answers 304', async (t) => {
  const service = await created(ctx.operator.post('/v1/marketplace-services', { name: 'Polled service', provider: 'ValueCo', webhookUrl: 'https://valueco.example/hooks/polled' }))
  const url = `/v1/marketplace-services/${service.data.id}`
  const before = await api.get(url)
  t.equal(before.data.activated, false)
  t.equal((await api.put(`${url}/activation`)).statusCode, 200)
  const after = await api.get(url, { 'if-none-match': String(before.headers.etag) })
  t.equal(after.statusCode, 200, 'the copy held says not activated: not current')
  t.equal(after.data.activated, true)
  t.equal(after.headers.etag, before.headers.etag, 'the service\'s version has not moved')
  const operators = await ctx.operator.get(url)
  assertNotModified(t, await ctx.operator.get(url, { 'if-none-match': String(operators.headers.etag) }), String(operators.headers.etag), 'the operator\'s view')
})
