import net from 'node:net'
import { Writable } from 'node:stream'
import { gzipSync } from 'node:zlib'
import pino from 'pino'
import t, { type Test } from 'tap'
import { buildApp, serverOptions } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { generateKey, hashKey } from '../../src/lib/keys.js'
import { BatonMetrics } from '../../src/lib/metrics.js'
import { logOptions } from '../../src/log-options.js'
import { BODY_MAX_DEPTH } from '../../src/plugins/json-body.js'
import { acceptsJson } from '../../src/plugins/protocol-errors.js'
import { setupApp, type Response } from '../helpers/app.js'
import { assertProblem } from '../helpers/assertions.js'
import { TestClock } from '../helpers/clock.js'
import { createTestDatabase } from '../helpers/database.js'

// Every error the server sends is application/problem+json, including those of Fastify's router and
// of Node's HTTP parser, which never reach a route; the latter are tested over real sockets.
const ctx = await setupApp(t, { HTTP_REQUEST_TIMEOUT_MS: '1000' })
const { client, key } = await ctx.newTenant()
const address = await ctx.app.listen({ host: '127.0.0.1', port: 0 })
const { port } = new URL(address)

t.test('errors of the router and of content handling are problems', async (t) => {
  assertProblem(t, await client.get('/v1/users/%ZZ'), 400, /URL is not valid/)
  assertProblem(t, await ctx.anonymous.get('/v1/users/%ZZ'), 400, /URL is not valid/)
  for (const path of ['/v1/users/%C0%AF', '/v1/users/%FF', '/v1/users/%ED%A0%80', '/v1/%E0%80%AFusers']) {
    // Each escape has its two hex digits: the bytes they spell are no UTF-8 (an overlong "/", a lone byte, a surrogate).
    const response = await client.get(path)
    assertProblem(t, response, 400, /URL is not valid: its escapes do not spell UTF-8 text/)
    t.notMatch(response.data.detail, /two hex digits/, path)
  }
  assertProblem(t, await client.get('/v1/users/%C3%BC%2'), 400, /a "%" must start an escape of two hex digits/)
  // A target Node's parser lets through that is neither a path nor an http(s) URL: the router reads no path in it, whatever its escapes.
  for (const target of ['ftp://x/v1/users', 'ftp://x/v1/users/%zz', 'ws://x/health/live']) {
    const answer = await raw(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
    parse(t, answer.text, 400)
    t.match(answer.text, /the request names a path, such as \/v1\/users, or an http or https URL/, target)
  }
  const absolute = await raw('GET HTTP://x/v1/users/%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  t.match(absolute.text, /a \\"%\\" must start an escape of two hex digits/, 'an http URL is read for its escapes')
  assertProblem(t, await client.get(`/v1/users/${'a'.repeat(101)}`), 414, /longer than 100 characters/)
  assertProblem(t, await client.get(`/v1/users?name=${'x'.repeat(9000)}`), 414, /longer than 8192/)
  assertProblem(t, await client.get('/v1/no-such-thing'), 404, /No route GET \/v1\/no-such-thing/)

  const wrongMethod = await client.put('/v1/users', { name: 'x' })
  assertProblem(t, wrongMethod, 405, /PUT is not allowed on \/v1\/users; use GET, HEAD, POST/)
  t.equal(wrongMethod.headers.allow, 'GET, HEAD, POST')
  const onItem = await ctx.anonymous.post('/v1/users/01a2253b-3e11-7f80-9a1b-2c3d4e5f6a7b')
  assertProblem(t, onItem, 405)
  t.equal(onItem.headers.allow, 'GET, HEAD, PATCH, DELETE')

  assertProblem(t, await client.get('/v1/users', { accept: 'text/html' }), 406, /Accept header excludes/)
  assertProblem(t, await client.get('/v1/users', { accept: 'application/json;q=0, text/plain' }), 406)
  assertProblem(t, await client.get('/v1/users', { accept: 'application/json;q=0, */*' }), 406, /Accept header excludes/)
  t.equal((await client.get('/v1/users', { accept: 'text/html, application/json;q=0.5' })).statusCode, 200)
  t.equal((await ctx.anonymous.get('/docs', { accept: 'text/html' })).statusCode < 400, true, 'the explorer still serves HTML')

  assertProblem(t, await client.post('/v1/users', 'x'.repeat(1024 * 1024 + 1), { 'content-type': 'application/json' }), 413)
  assertProblem(t, await client.post('/v1/users', 'name=x', { 'content-type': 'application/x-www-form-urlencoded' }), 415)
  assertProblem(t, await client.post('/v1/users', '{"name":"x"}', { 'content-type': 'text/plain' }), 415)
  assertProblem(t, await client.post('/v1/users', '{"name":', { 'content-type': 'application/json' }), 400)
  assertProblem(t, await client.post('/v1/users', '', { 'content-type': 'application/json' }), 400)
})

t.test('a body without a Content-Type, or of another type, answers 415 saying what was sent and what to send', async (t) => {
  const send = (method: 'POST' | 'PATCH' | 'PUT', url: string, headers: Record<string, string>) =>
    ctx.app.inject({ method, url, payload: '{"name":"x"}', headers: { authorization: `Bearer ${key}`, ...headers } })
  const template = await client.post('/v1/process-templates', { name: 'Typed' })
  t.equal(template.statusCode, 201, template.body)
  const cases: [string, 'POST' | 'PATCH' | 'PUT', string, Record<string, string>, RegExp][] = [
    ['a POST without one', 'POST', '/v1/users', {}, /without a Content-Type: send it as application\/json/],
    ['a PATCH without one', 'PATCH', `/v1/process-templates/${template.data.id}`, {}, /without a Content-Type/],
    ['a PUT without one', 'PUT', `/v1/process-templates/${template.data.id}/steps/order`, {}, /without a Content-Type/],
    ['an empty one', 'POST', '/v1/users', { 'content-type': '' }, /without a Content-Type/],
    ['text/plain', 'POST', '/v1/users', { 'content-type': 'text/plain' }, /Content-Type "text\/plain" is not taken: send it as application\/json/]
  ]
  for (const [what, method, url, headers, detail] of cases) {
    const response = Object.assign(await send(method, url, headers), { data: undefined as unknown })
    response.data = JSON.parse(response.body)
    assertProblem(t, response as Response, 415, detail)
    t.match(response.data, { errors: [{ pointer: '/headers/content-type' }] }, `${what}: the header is named`)
  }
})

t.test('a QUERY, which no route takes, answers 405 or 404 with a Content-Type or without one, not a 400 about it', async (t) => {
  for (const headers of [{}, { 'content-type': 'application/json' }]) {
    const query = await ctx.app.inject({ method: 'QUERY' as 'GET', url: '/v1/users', payload: '{}', headers: { authorization: `Bearer ${key}`, ...headers } })
    const what = JSON.stringify(headers)
    t.equal(query.statusCode, 405, `${what}: ${query.body}`)
    t.match(query.headers['content-type'], /^application\/problem\+json/)
    t.equal(query.headers.allow, 'GET, HEAD, POST', what)
    t.match(JSON.parse(query.body), { detail: 'QUERY is not allowed on /v1/users; use GET, HEAD, POST.' })
    const nowhere = await ctx.app.inject({ method: 'QUERY' as 'GET', url: '/v1/nothing-here', headers })
    t.equal(nowhere.statusCode, 404, `${what}: ${nowhere.body}`)
    t.match(JSON.parse(nowhere.body), { detail: 'No route QUERY /v1/nothing-here.' })
  }
})

t.test('a file the explorer does not have is a 404, not a 405 telling to use the method sent', async (t) => {
  // Names @fastify/send refuses to look up (a NUL, ".." after an escaped backslash or slash, a name past
  // the file system's limit) are missing files as well, not a 400 or 403.
  const refused = ['/docs/static/%00', '/docs/static/a%00.js', '/docs/static/%5c..%5cpackage.json', '/docs/static/..%2f..%2fpackage.json',
    '/docs/static/%2e%2e%2fpackage.json', `/docs/static/${'a'.repeat(300)}`]
  for (const path of ['/docs/static/nothing.js', '/docs/static/.hidden', '/docs/static/a%2Fb', '/docs/static/swagger-ui.css/x', ...refused]) {
    for (const method of ['GET', 'HEAD'] as const) {
      const missing = await ctx.app.inject({ method, url: path })
      t.equal(missing.statusCode, 404, `${method} ${path}`)
      t.match(missing.headers['content-type'], /^application\/problem\+json/)
      t.equal(missing.headers.allow, undefined, 'no Allow: the method is allowed')
      if (method === 'GET') t.match(JSON.parse(missing.body), { status: 404, detail: `Nothing is found at ${path}.` })
    }
  }
  t.equal((await ctx.anonymous.get('/docs/static/swagger-ui.css')).statusCode, 200, 'a file it has is served')
  const posted = await ctx.anonymous.post('/docs/static/nothing.js', {})
  assertProblem(t, posted, 405, /POST is not allowed on \/docs\/static\/nothing.js; use GET, HEAD/)
})

t.test('a number beyond a double\'s range is refused, not saved as null', async (t) => {
  const json = { 'content-type': 'application/json' }
  const tooLarge = async (body: string, pointer: string) => {
    const response = await client.post('/v1/properties', body, json)
    assertProblem(t, response, 400, /number too large/)
    t.same(response.data.errors, [{ pointer, detail: 'number too large' }], `${body.slice(0, 60)} names ${pointer}`)
  }
  await tooLarge('{"fields":{"x":1e400,"y":1}}', '/body/fields/x')
  await tooLarge('{"fields":{"y":-1E+400}}', '/body/fields/y')
  await tooLarge('{"fields":{"a":[[1,{"b~/":2e308}]]}}', '/body/fields/a/0/1/b~0~1')
  await tooLarge(`{"fields":{"digits":${'9'.repeat(309)}}}`, '/body/fields/digits')
  await tooLarge(`{"fields":{"mantissa":1${'0'.repeat(250)}e60}}`, '/body/fields/mantissa')
  assertProblem(t, await client.post('/v1/properties', '1e400', json), 400, /number too large/)
  t.equal((await client.get('/v1/properties')).data.items.length, 0, 'nothing saved')

  const fine = await client.post('/v1/properties', `{"fields":{"tiny":1e-400,"max":1.7976931348623157e308,"big":1e100,"long":${'9'.repeat(300)}}}`, json)
  t.equal(fine.statusCode, 201, fine.body)
  t.same(fine.data.fields, { tiny: 0, max: Number.MAX_VALUE, big: 1e100, long: 1e300 }, 'an underflow is 0, numbers in range are kept')
  // As the README says: numbers are doubles, and a name given twice keeps its last value.
  const rounded = await client.post('/v1/properties', '{"fields":{"id":9007199254740993,"twice":1,"twice":2}}', json)
  t.same((await client.get(`/v1/properties/${rounded.data.id}`)).data.fields, { id: 9007199254740992, twice: 2 }, 'a whole number past 2^53 is rounded')

  // A route that takes no body ignores such a body as it ignores any other, as it does a __proto__ or a depth past the limit.
  const service = await ctx.operator.post('/v1/marketplace-services', { name: 'Huge number', provider: 'P', webhookUrl: 'https://p.example/hook' })
  for (const body of ['{"x":1e400}', '1e400', `[${'9'.repeat(400)}]`]) {
    const activated = await client.put(`/v1/marketplace-services/${service.data.id}/activation`, body, json)
    t.equal(activated.statusCode, 200, `${body.slice(0, 20)}: ${activated.body}`)
  }
  const deleted = await ctx.app.inject({ method: 'DELETE', url: `/v1/properties/${fine.data.id}`, payload: '{"x":1e400}', headers: { ...json, authorization: `Bearer ${key}` } })
  t.equal(deleted.statusCode, 204, `a DELETE too: ${deleted.body}`)
})

t.test('a body nested deeper than BODY_MAX_DEPTH is refused with 422 and a pointer before validation, on any route that takes one', async (t) => {
  const json = { 'content-type': 'application/json' }
  const lists = (levels: number) => `${'['.repeat(levels)}${']'.repeat(levels)}`
  const deep = await client.post('/v1/users', `{"name":"x","email":"x@example.com","extra":${lists(BODY_MAX_DEPTH)}}`, json)
  assertProblem(t, deep, 422, /deeper than 100 levels/)
  t.same(deep.data.errors, [{ pointer: `/body/extra${'/0'.repeat(BODY_MAX_DEPTH - 1)}`, detail: 'nested deeper than 100 levels' }])
  assertProblem(t, await client.post('/v1/users', lists(100_000), json), 422, /deeper than 100 levels/)
  // One level less passes on to the schema, which refuses the extra field.
  assertProblem(t, await client.post('/v1/users', `{"name":"x","email":"x@example.com","extra":${lists(BODY_MAX_DEPTH - 1)}}`, json), 400, /extra/)
  const created = await client.post('/v1/users', `{"name":"x","email":"x@example.com"${' '.repeat(300)}}`, json)
  t.equal(created.statusCode, 201, 'a long shallow body is fine')
  const brackets = await client.post('/v1/properties', `{"fields":{"note":"\\\\${'[{'.repeat(100)}\\"${'['.repeat(100)}"}}`, json)
  t.equal(brackets.statusCode, 201, `brackets in a string do not count, nor after an escaped quote: ${brackets.body.slice(0, 200)}`)
  // A route without a body schema never reads the body, so its depth does not matter.
  const replay = await client.post(`/v1/deliveries/${created.data.id}/replay`, lists(5000), json)
  t.equal(replay.statusCode, 404, replay.body)
})

t.test('an empty body sent as application/json is no body: routes that take none answer, the others name /body', async (t) => {
  const json = { 'content-type': 'application/json' }
  const service = await ctx.operator.post('/v1/marketplace-services', { name: 'Empty body', provider: 'P', webhookUrl: 'https://p.example/hook' })
  const activated = await client.put(`/v1/marketplace-services/${service.data.id}/activation`, '', json)
  t.equal(activated.statusCode, 200, activated.body)
  t.equal(activated.data.activated, true)
  assertProblem(t, await client.post('/v1/deliveries/01a2253b-4a10-7e2f-8c3b-7d9e1f2a4b56/replay', '', json), 404)
  assertProblem(t, await client.post('/v1/process-instances/01a2253b-49f8-7a13-b1c4-2e3f4a5b6c7d/cancel', '', json), 404)
  const needsOne = await client.post('/v1/users', '', json)
  assertProblem(t, needsOne, 400, /has no body: this route takes a JSON object/)
  t.same(needsOne.data.errors, [{ pointer: '/body', detail: 'a JSON object body is required' }])
  assertProblem(t, await client.put(`/v1/marketplace-services/${service.data.id}/activation`, ' ', json), 400, /not valid JSON/)
})

t.test('a body that is not UTF-8 answers 400 whatever charset it names, instead of being saved with U+FFFD', async (t) => {
  const muller = JSON.stringify({ fields: { name: 'Müller' } })
  for (const [charset, bytes] of [['iso-8859-1', Buffer.from(muller, 'latin1')], ['utf-16le', Buffer.from(muller, 'utf16le')], ['', Buffer.from(muller, 'latin1')]] as const) {
    const refused = await client.post('/v1/properties', bytes, { 'content-type': `application/json${charset ? `; charset=${charset}` : ''}` })
    assertProblem(t, refused, 400, /not valid UTF-8/)
    t.same(refused.data.errors, [{ pointer: '/body', detail: 'not UTF-8' }], charset || 'no charset')
  }
  t.equal((await client.get('/v1/properties?fields={"name":"M\uFFFDller"}')).data.items.length, 0, 'nothing saved')
  for (const charset of ['utf-8', 'UTF-8', 'iso-8859-1']) {
    // The charset has no effect on JSON (RFC 8259 11): UTF-8 bytes are read as UTF-8 under any label, ASCII alike.
    const body = charset === 'iso-8859-1' ? '{"fields":{"name":"Mueller"}}' : muller
    const saved = await client.post('/v1/properties', Buffer.from(body, 'utf8'), { 'content-type': `application/json; charset=${charset}` })
    t.equal(saved.statusCode, 201, saved.body)
    t.same(saved.data.fields, JSON.parse(body).fields, charset)
  }
})

t.test('text escaped as half of a surrogate pair alone answers 400 naming each field, instead of being saved as U+FFFD', async (t) => {
  const json = { 'content-type': 'application/json' }
  const lone = 'holds a lone surrogate (\\uD800–\\uDFFF without its pair)'
  const user = await client.post('/v1/users', '{"name":"Anna \\ud800","email":"lone@example.com"}', json)
  assertProblem(t, user, 400, /half of a surrogate pair alone/)
  t.same(user.data.errors, [{ pointer: '/body/name', detail: lone }], 'a text column saved it as U+FFFD')
  t.equal((await client.get('/v1/users?email=lone@example.com')).data.items.length, 0, 'nothing saved')
  const fields = await client.post('/v1/properties', '{"fields":{"a":"x\\udbff","ok":"\\ud83d\\ude00","b":[1,"\\udc00y"],"k\\udc00":1}}', json)
  assertProblem(t, fields, 400, /half of a surrogate pair alone/)
  t.same(fields.data.errors, [
    { pointer: '/body/fields', detail: 'a property name holds a lone surrogate (\\uD800–\\uDFFF without its pair)' },
    { pointer: '/body/fields/a', detail: lone },
    { pointer: '/body/fields/b/1', detail: lone }
  ], 'jsonb refused it with a 400 naming no field')
  const pair = await client.post('/v1/properties', '{"fields":{"smile":"\\ud83d\\ude00","text":"\\\\ud800"}}', json)
  t.equal(pair.statusCode, 201, pair.body)
  t.same(pair.data.fields, { smile: '\u{1F600}', text: '\\ud800' }, 'a whole pair, and an escaped backslash before "ud800", are text')
  // A route without a body schema never reads the body.
  t.equal((await client.post(`/v1/deliveries/${pair.data.id}/replay`, '{"x":"\\ud800"}', json)).statusCode, 404)
})

t.test('a key __proto__ (or constructor.prototype) in a body answers 400 naming where, not "Body is not valid JSON"', async (t) => {
  const json = { 'content-type': 'application/json' }
  const proto = await client.post('/v1/properties', '{"fields":{"ok":1,"__proto__":{"admin":true}}}', json)
  assertProblem(t, proto, 400, /__proto__/)
  t.notMatch(proto.data.detail, /not valid JSON/, 'the body is valid JSON')
  t.same(proto.data.errors, [{ pointer: '/body/fields/__proto__', detail: 'a property name Baton takes in no body (it would set an object\'s prototype)' }])
  // Escaped, the name is the same once decoded; and a record's PATCH that would remove it is refused the same way.
  const escaped = await client.post('/v1/properties', '{"fields":{"list":[{"\\u005f_proto__":null}]}}', json)
  t.same(escaped.data.errors, [{ pointer: '/body/fields/list/0/__proto__', detail: 'a property name Baton takes in no body (it would set an object\'s prototype)' }])
  const created = await client.post('/v1/properties', { fields: { constructor: 1 } })
  t.equal(created.statusCode, 201, 'a field named constructor alone is a field like any other')
  const patch = await client.patch(`/v1/properties/${created.data.id}`, '{"fields":{"constructor":{"prototype":{"x":1}}}}', json)
  assertProblem(t, patch, 400, /constructor/)
  t.same(patch.data.errors, [{ pointer: '/body/fields/constructor/prototype', detail: 'a property name Baton takes in no body (it would set an object\'s prototype)' }])
  t.equal((await client.get(`/v1/properties/${created.data.id}`)).data.version, 1, 'nothing written')
  // A body that is not JSON still says so; one nested too deep says that first, as it would without the name.
  assertProblem(t, await client.post('/v1/properties', '{"fields":{"__proto__":', json), 400, /not valid JSON/)
  const deep = await client.post('/v1/properties', `{"fields":${'{"a":'.repeat(BODY_MAX_DEPTH)}{"__proto__":1}${'}'.repeat(BODY_MAX_DEPTH)}}`, json)
  assertProblem(t, deep, 422, new RegExp(`deeper than ${BODY_MAX_DEPTH} levels`))
  // After a byte order mark, which the parser drops, the name is found all the same.
  const marked = await client.post('/v1/properties', '\uFEFF{"fields":{"__proto__":{}}}', json)
  t.same(marked.data.errors, [{ pointer: '/body/fields/__proto__', detail: 'a property name Baton takes in no body (it would set an object\'s prototype)' }], marked.body)
  // A route that takes no body ignores such a body as it ignores any other, instead of "not valid JSON".
  const service = await ctx.operator.post('/v1/marketplace-services', { name: 'Proto body', provider: 'P', webhookUrl: 'https://p.example/hook' })
  for (const body of ['{"x":1}', '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{}}}']) {
    const activated = await client.put(`/v1/marketplace-services/${service.data.id}/activation`, body, json)
    t.equal(activated.statusCode, 200, `${body}: ${activated.body}`)
  }
})

t.test('a body in a content coding other than identity answers 415, telling it apart from a media type', async (t) => {
  const json = { 'content-type': 'application/json' }
  const body = '{"fields":{"city":"Berlin"}}'
  for (const coding of ['gzip', 'GZIP', 'br', 'deflate', 'identity, gzip']) {
    const compressed = await client.post('/v1/properties', coding.includes('gzip') ? gzipSync(body) : body, { ...json, 'content-encoding': coding })
    assertProblem(t, compressed, 415, /content coding .* is not supported: send the body uncompressed/)
    t.equal(compressed.headers['accept-encoding'], 'identity', `${coding}: names the coding it accepts`)
  }
  const mediaType = await client.post('/v1/users', 'name=x', { 'content-type': 'application/x-www-form-urlencoded' })
  assertProblem(t, mediaType, 415)
  t.equal(mediaType.headers['accept-encoding'], undefined, 'a 415 for a media type names no coding (RFC 9110 12.5.3)')

  const identity = await client.post('/v1/properties', body, { ...json, 'content-encoding': 'identity' })
  t.equal(identity.statusCode, 201, 'identity is no coding')
  const url = `/v1/properties/${identity.data.id}`
  t.equal((await client.get(url, { 'content-encoding': 'gzip' })).statusCode, 200, 'a GET has no body to decode')
  t.equal((await client.delete(url, { 'content-encoding': 'gzip' })).statusCode, 204, 'nor has a DELETE without one')
})

t.test('Expect: 100-continue with a body over the limit is refused at once, without inviting the body (real sockets)', async (t) => {
  const head = (length: number) => `POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`
  const tooLarge = await raw(head(1024 * 1024 + 1))
  parse(t, tooLarge.text, 413)
  notStored(t, tooLarge.text)
  t.match(tooLarge.text, /larger than the 1048576 bytes/)

  // A body within the limit is still invited, and the route answers it.
  const body = JSON.stringify({ name: 'Expecting', email: 'expect@example.com' })
  const answer = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write(head(Buffer.byteLength(body))))
    let text = ''
    socket.on('data', (chunk) => {
      if (text === '' && chunk.toString().startsWith('HTTP/1.1 100 ')) socket.write(body)
      text += chunk.toString()
    })
    socket.on('error', reject)
    socket.on('close', () => resolve(text))
  })
  t.match(answer, /^HTTP\/1.1 100 Continue\r\n\r\nHTTP\/1.1 201 /)
})

t.test('acceptsJson reads media ranges and their quality', async (t) => {
  for (const yes of [undefined, '*/*', 'application/*', 'Application/JSON', 'application/problem+json', 'text/html, */*;q=0.1', 'json',
    '*/*;q=0, application/json', 'application/*;q=0, application/json;q=0.001', 'application/json; charset=utf-8']) {
    t.ok(acceptsJson(yes), `${yes} accepts JSON`)
  }
  const refusing = ['text/html', 'application/json;q=0', 'image/png, text/*', 'application/xml', '*/*;q=0',
    // The most specific range that names a type sets its quality (RFC 9110 12.5.1): */* does not undo an explicit q=0.
    'application/json;q=0, */*', 'application/json;q=0, application/problem+json', 'application/*;q=0, */*', 'APPLICATION/JSON;Q=0, */*']
  for (const no of refusing) t.notOk(acceptsJson(no), `${no} does not`)
})

/** Sends raw bytes over a socket and collects the whole answer until the server closes it. */
function raw(request: string | Buffer, options: { keepOpenMs?: number } = {}): Promise<{ text: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write(request))
    let text = ''
    socket.on('data', (chunk) => (text += chunk.toString()))
    socket.on('error', reject)
    socket.on('close', () => resolve({ text, ms: Date.now() - started }))
    if (options.keepOpenMs === undefined) socket.setTimeout(10_000, () => socket.destroy())
  })
}

/** An answer given before any route is found (Node's parser, an Expect, a CONNECT): no cache keeps it. */
function notStored(t: Test, text: string): void {
  t.match(text.split('\r\n\r\n')[0], /\r\ncache-control: no-store(\r\n|$)/i, 'kept by no cache')
}

/** The status and the parsed problem of a raw HTTP answer. */
function parse(t: Test, text: string, status: number): void {
  const [head = '', body = ''] = text.split('\r\n\r\n')
  t.match(head, new RegExp(`^HTTP/1.1 ${status} `), `status line ${status}: ${head.split('\r\n')[0]}`)
  t.match(head, /content-type: application\/problem\+json/i, 'problem content type')
  const problem = JSON.parse(body)
  t.match(problem, { status, title: String, detail: String, type: 'about:blank' }, 'problem body')
  t.equal(Buffer.byteLength(body), Number(/content-length: (\d+)/i.exec(head)?.[1]), 'content-length matches')
}

t.test('errors of Node\'s HTTP parser are problems too (real sockets)', async (t) => {
  const expect = await raw(`GET /v1/users HTTP/1.1\r\nHost: x\r\nExpect: x\r\n\r\n`)
  parse(t, expect.text, 417)
  notStored(t, expect.text)
  t.match(expect.text, /Expect: x cannot be met/)

  const bigHeader = await raw(`GET /v1/users HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`)
  parse(t, bigHeader.text, 431)
  notStored(t, bigHeader.text)

  // Chunk extensions past Node's 16 KiB: Node's own answer is a 413, which the problem keeps.
  const extensions = await raw(`POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\n` +
    `Transfer-Encoding: chunked\r\n\r\n2;${'a'.repeat(17 * 1024)}\r\n{}\r\n0\r\n\r\n`)
  parse(t, extensions.text, 413)
  notStored(t, extensions.text)
  t.match(extensions.text, /chunk extensions of the body are larger than 16 KiB/)

  const longUrl = await raw(`GET /v1/users?x=${'a'.repeat(10_000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  parse(t, longUrl.text, 414)

  const badId = await raw(`GET /v1/users/${'a'.repeat(101)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  parse(t, badId.text, 414)

  const badEscape = await raw('GET /v1/users/%ZZ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  parse(t, badEscape.text, 400)

  const garbage = await raw('NOT HTTP AT ALL\r\n\r\n')
  parse(t, garbage.text, 400)
  notStored(t, garbage.text)

  const badLength = await raw('POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n')
  parse(t, badLength.text, 400)
  notStored(t, badLength.text)
})

t.test('an HTTP/1.1 request without Host answers 400 as a problem, not Node\'s empty 400; HTTP/1.0 needs none (real sockets)', async (t) => {
  for (const path of ['/v1/users', '/health/live', '/no-such-route']) {
    const noHost = await raw(`GET ${path} HTTP/1.1\r\nAuthorization: Bearer ${key}\r\nConnection: close\r\n\r\n`)
    parse(t, noHost.text, 400)
    t.match(noHost.text, /must carry a Host header/, path)
  }
  const old = await raw(`GET /v1/users HTTP/1.0\r\nAuthorization: Bearer ${key}\r\n\r\n`)
  t.match(old.text, /^HTTP\/1.1 200 /, 'HTTP/1.0 has no Host to require')
  const empty = await raw(`GET /v1/users HTTP/1.1\r\nHost:\r\nAuthorization: Bearer ${key}\r\nConnection: close\r\n\r\n`)
  t.match(empty.text, /^HTTP\/1.1 200 /, 'an empty Host is a Host (RFC 9112 3.2: a target without authority)')
})

t.test('a request with two Host headers, or a Host that is no host[:port], answers 400 as a problem, not served as if it named one host (real sockets)', async (t) => {
  const send = (hosts: string[], version = '1.1') => raw(`GET /v1/users HTTP/${version}\r\n${hosts.map((host) => `Host: ${host}\r\n`).join('')}` +
    `Authorization: Bearer ${key}\r\nConnection: close\r\n\r\n`)
  for (const [hosts, version] of [[['a.example', 'b.example']], [['x', 'x']], [['a.example', 'b.example'], '1.0']] as [string[], string?][]) {
    const twice = await send(hosts, version)
    parse(t, twice.text, 400)
    t.match(twice.text, /carries 2 Host headers; send one/, `${hosts.join(' and ')} over HTTP/${version ?? '1.1'}`)
  }
  for (const host of ['a b', 'x/y', 'user@x', 'x:abc', '[::1', 'a.example, b.example', 'bad"host']) {
    const invalid = await send([host])
    parse(t, invalid.text, 400)
    t.match(invalid.text, /The Host header is not a host name or address/, host)
  }
  for (const host of ['x', 'api.baton.example:8080', '127.0.0.1:3000', '[::1]:3000', '[::ffff:127.0.0.1]', 'xn--mller-kva.example', 'under_score.local', '[fe80::1%25eth0]:3000', '']) {
    t.match((await send([host])).text, /^HTTP\/1.1 200 /, `${host || 'an empty Host'} is a Host`)
  }
})

t.test('a CONNECT is answered 405 and the connection closed, not dropped without a word (real sockets)', async (t) => {
  const tunnel = await raw('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nX-Request-Id: tunnel-1\r\n\r\n')
  parse(t, tunnel.text, 405)
  notStored(t, tunnel.text)
  t.match(tunnel.text, /CONNECT is not supported: Baton is not a proxy/)
  t.match(tunnel.text, /\r\nallow: \r\n/i, 'an empty Allow: a host:port allows no method here')
  t.match(tunnel.text, /"requestId":"tunnel-1"/)

  const onRoute = await raw('CONNECT /v1/users HTTP/1.1\r\nHost: x\r\n\r\n')
  parse(t, onRoute.text, 405)
  t.match(onRoute.text, /\r\nallow: GET, HEAD, POST\r\n/i, 'a path names the methods it takes, as any 405 does')
  t.match(onRoute.text, /"instance":"\/v1\/users"/)
  for (const path of ['/%zz', '/v1/users//']) {
    const none = await raw(`CONNECT ${path} HTTP/1.1\r\nHost: x\r\n\r\n`)
    parse(t, none.text, 405)
    t.match(none.text, /\r\nallow: \r\n/i, `${path} names no method: no route takes it`)
  }

  t.equal((await fetch(`${address}/health/live`)).status, 200, 'the server still answers')
})

t.test('an Upgrade to websocket or h2c is ignored: the request is answered as a plain HTTP/1.1 one', async (t) => {
  const websocket = await raw('GET /v1/users HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n' +
    'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  parse(t, websocket.text, 401)
  const h2c = await raw('GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n')
  t.match(h2c.text, /^HTTP\/1.1 200 /)
  t.match(h2c.text, /\{"status":"ok"\}$/)
})

t.test('a body in a transfer coding other than chunked answers 400, instead of being read as if it were not coded (real sockets)', async (t) => {
  const body = '{"name":"Coded","email":"coded@a.example"}'
  const send = (coding: string, bytes: Buffer) => raw(Buffer.concat([Buffer.from(`POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\n` +
    `Content-Type: application/json\r\nTransfer-Encoding: ${coding}\r\nConnection: close\r\n\r\n${bytes.length.toString(16)}\r\n`), bytes, Buffer.from('\r\n0\r\n\r\n')]))
  for (const [coding, bytes] of [['gzip, chunked', gzipSync(body)], ['gzip, chunked', Buffer.from(body)], ['deflate , Chunked', Buffer.from(body)]] as const) {
    const coded = await send(coding, bytes)
    parse(t, coded.text, 400)
    t.match(coded.text, /The transfer coding (gzip|deflate) is not supported: send the body chunked alone or with a Content-Length/, coding)
  }
  t.equal((await client.get('/v1/users?email=coded@a.example')).data.items.length, 0, 'nothing saved')
  const chunked = await send('chunked', Buffer.from(body))
  t.match(chunked.text, /^HTTP\/1.1 201 /, 'chunked alone is read as before')
})

t.test('a client that trickles its body is answered 408 once the request timeout passes', async (t) => {
  const slow = await raw(`POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\n` +
    'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"na', { keepOpenMs: 5000 })
  parse(t, slow.text, 408)
  notStored(t, slow.text)
  t.match(slow.text, /did not arrive in full within 1000 ms/)
  t.ok(slow.ms >= 1000 && slow.ms < 4000, `cut off after ${slow.ms} ms`)

  const slowHeaders = await raw('GET /v1/users HTTP/1.1\r\nHost: x\r\n', { keepOpenMs: 5000 })
  parse(t, slowHeaders.text, 408)
})

t.test('a client that goes away while its body is read is logged as such, not as the database being away (real sockets)', async (t) => {
  const database = await createTestDatabase()
  const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'info', PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0' })
  const lines: { level: number; msg: string }[] = []
  const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => { lines.push(JSON.parse(String(chunk))); done() } })
  const operatorKey = generateKey('operator')
  const app = await buildApp({ config, db: database.db, operatorKeyHash: hashKey(operatorKey), clock: new TestClock(), metrics: new BatonMetrics() },
    serverOptions(config, pino(logOptions(config, false), sink)))
  t.teardown(async () => {
    await app.close()
    await database.drop()
  })
  const { port } = new URL(await app.listen({ host: '127.0.0.1', port: 0 }))
  await new Promise<void>((resolve) => {
    const socket = net.connect(Number(port), '127.0.0.1', () => {
      socket.write(`POST /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${operatorKey}\r\n` +
        'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name":', () => setTimeout(() => socket.destroy(), 50))
    })
    socket.on('close', () => resolve())
  })
  const wentAway = 'the client went away before its request arrived in full'
  for (let i = 0; i < 300 && !lines.some((line) => line.msg === wentAway); i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.match(lines.find((line) => line.msg === wentAway), { level: 30, err: { code: 'ECONNRESET' } }, 'the request ends as the client\'s doing, said at info')
  t.notOk(lines.some((line) => /requests answer 503/.test(line.msg)), 'no line says the database is away')
  t.notOk(lines.some((line) => line.level >= 40), `nothing is logged as a warning or an error: ${JSON.stringify(lines.filter((line) => line.level >= 40))}`)
})

t.test('a normal request over a socket still works', async (t) => {
  const response: Response = await client.get('/v1/users')
  t.equal(response.statusCode, 200)
  const live = await fetch(`${address}/health/live`)
  t.equal(live.status, 200)
})
