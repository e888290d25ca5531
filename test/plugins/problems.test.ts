import { Ajv } from 'ajv'
import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { IF_MATCH_PATTERN } from '../../src/lib/versioning.js'
import { UNIQUE_CONFLICTS } from '../../src/plugins/problems.js'
import { clearerMessage } from '../../src/plugins/validation-messages.js'
import { ALL_ERRORS_MAX_VALUES, appendErrorsInPlace } from '../../src/plugins/validation.js'
import { setupApp, type Response } from '../helpers/app.js'
import { assertProblem } from '../helpers/assertions.js'
import { DOCUMENT } from '../helpers/openapi.js'

// Postgres cannot store NUL: in text it fails with 22021, as \u0000 in jsonb with 22P05.
// Either is the client's doing and answers 400, not 500.
t.test('text Postgres cannot store answers 400', async (t) => {
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  const unstorable = /character that cannot be stored.*NUL/

  assertProblem(t, await client.post('/v1/users', { name: 'Anna\u0000Berg', email: 'anna@example.com' }), 400, unstorable)
  const anna = await client.post('/v1/users', { name: 'Anna Berg', email: 'anna@example.com' })
  t.equal(anna.statusCode, 201)
  assertProblem(t, await client.patch(`/v1/users/${anna.data.id}`, { name: 'Anna\u0000' }), 400, unstorable)

  assertProblem(t, await client.post('/v1/properties', { fields: { city: 'Ber\u0000lin' } }), 400, unstorable)
  assertProblem(t, await client.post('/v1/addresses', { fields: { 'na\u0000me': 'x' } }), 400, unstorable)
  const property = await client.post('/v1/properties', { fields: { city: 'Berlin' } })
  t.equal(property.statusCode, 201)
  assertProblem(t, await client.patch(`/v1/properties/${property.data.id}`, { fields: { city: '\u0000' } }), 400, unstorable)
  t.same((await client.get(`/v1/properties/${property.data.id}`)).data.fields, { city: 'Berlin' }, 'unchanged')
})

t.test('the 400 for text Postgres cannot store points at each field holding the NUL, as any validation failure does', async (t) => {
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  const nul = (pointer: string) => ({ pointer, detail: 'must not contain the NUL character (U+0000)' })
  const errorsOf = (r: Response) => {
    assertProblem(t, r, 400, /character that cannot be stored/)
    return r.data.errors
  }
  t.same(errorsOf(await client.post('/v1/users', { name: 'Anna\u0000Berg', email: 'anna@example.com' })), [nul('/body/name')])
  t.same(errorsOf(await client.post('/v1/properties', { fields: { city: 'Ber\u0000lin', tags: ['a', 'b\u0000'] } })),
    [nul('/body/fields/city'), nul('/body/fields/tags/1')])
  t.same(errorsOf(await client.post('/v1/addresses', { fields: { 'na\u0000me': 'x' } })),
    [{ pointer: '/body/fields', detail: 'a property name must not contain the NUL character (U+0000)' }])
  t.same(errorsOf(await client.get('/v1/users?q=%00')), [nul('/querystring/q')])
  t.same(errorsOf(await ctx.operator.post('/v1/tenants', { name: 'Nul\u0000 GmbH', webId: 'nul-1' })), [nul('/body/name')])
})

t.test('a validation failure names the part of the request in a sentence that reads well', async (t) => {
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  const detail = async (response: Promise<Response>) => {
    const answered = await response
    assertProblem(t, answered, 400)
    return answered.data.detail
  }
  t.equal(await detail(client.post('/v1/users', { name: 'Anna' })), 'The request\'s body does not match its schema.')
  t.equal(await detail(client.get('/v1/users/anna')), 'The request\'s path parameters do not match their schema.')
  t.equal(await detail(client.get('/v1/users?limit=0')), 'The request\'s query string does not match its schema.')
  t.equal(await detail(client.post('/v1/properties', {}, { 'idempotency-key': 'two words' })), 'The request\'s headers do not match their schema.')
})

t.test('a body left out where the route needs one says that a JSON object body is required', async (t) => {
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  const anna = await client.post('/v1/users', { name: 'Anna Berg', email: 'anna@example.com' })
  const missing = [
    client.post('/v1/users'),
    client.post('/v1/users', '', { 'content-type': 'application/json' }),
    client.patch(`/v1/users/${anna.data.id}`)
  ]
  for (const answered of await Promise.all(missing)) {
    assertProblem(t, answered, 400)
    t.equal(answered.data.detail, 'The request has no body: this route takes a JSON object, sent as application/json.')
    t.same(answered.data.errors, [{ pointer: '/body', detail: 'a JSON object body is required' }])
  }
  // A body sent, of another type than an object, is not a missing one.
  for (const body of ['null', '[]', '"Anna"']) {
    const sent = await client.post('/v1/users', body, { 'content-type': 'application/json' })
    assertProblem(t, sent, 400, /body does not match its schema/)
    t.same(sent.data.errors, [{ pointer: '/body', detail: 'must be an object' }], body)
  }
})

t.test('a value outside an enum or a const is told what the schema allows', async (t) => {
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  const service = await ctx.operator.post('/v1/marketplace-services', { name: 'Enums', provider: 'P', webhookUrl: 'https://p.example/hook' })
  const trigger = await ctx.operator.post(`/v1/marketplace-services/${service.data.id}/triggers`, { module: 'activity', events: ['create', 'delete'] })
  assertProblem(t, trigger, 400)
  t.same(trigger.data.errors, [
    { pointer: '/body/module', detail: 'must be one of "property", "address"' },
    { pointer: '/body/events/1', detail: 'must be one of "create", "update"' }
  ])
  const listed = await client.get('/v1/deliveries?status=done')
  assertProblem(t, listed, 400)
  t.same(listed.data.errors, [{ pointer: '/querystring/status', detail: 'must be one of "pending", "running", "succeeded", "failed", "cancelled"' }])

  // What the API's schemas do not (yet) reach: a single value, a const, a long enum, a message of our own.
  const ajv = (keyword: string, params: Record<string, unknown>, message: string) => clearerMessage({ keyword, instancePath: '/x', schemaPath: '#/x', params, message }).message
  t.equal(ajv('enum', { allowedValues: ['true'] }, 'must be equal to one of the allowed values'), 'must be "true"')
  t.equal(ajv('const', { allowedValue: 'afterPrevious' }, 'must be equal to constant'), 'must be "afterPrevious"')
  t.equal(ajv('const', { allowedValue: true }, 'must be equal to constant'), 'must be true')
  const many = Array.from({ length: 300 }, (_, i) => `value${i}`)
  t.equal(ajv('enum', { allowedValues: many }, 'must be equal to one of the allowed values'),
    `must be one of ${many.slice(0, 10).map((v) => `"${v}"`).join(', ')}, … (300 values in all)`)
  t.equal(ajv('const', { allowedValue: 'x'.repeat(100) }, 'must be equal to constant'), `must be "${'x'.repeat(58)}…`)
  t.equal(ajv('enum', { allowedValues: ['a'] }, 'must be a known mode'), 'must be a known mode', 'a message of our own stays')
})

t.test('a property the schema does not take is named in the pointer and the detail', async (t) => {
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  const created = await client.post('/v1/users', { name: 'Anna Berg', email: 'anna@example.com', nickname: 'Anni', 'a/b~c': 1 })
  assertProblem(t, created, 400)
  t.same(created.data.errors, [
    { pointer: '/body/nickname', detail: '"nickname" is not a known field' },
    { pointer: '/body/a~1b~0c', detail: '"a/b~c" is not a known field' }
  ], 'a name is escaped in the pointer as RFC 6901 says')
  const long = 'x'.repeat(100)
  t.same((await client.post('/v1/users', { name: 'Anna Berg', email: 'anna@example.com', [long]: 1 })).data.errors,
    [{ pointer: `/body/${long}`, detail: `"${'x'.repeat(58)}… is not a known field` }], 'a long name is cut short in the detail')
  const listed = await client.get('/v1/users?a/b=1')
  assertProblem(t, listed, 400, /this route does not take: a\/b\./)
  t.match(listed.data.errors, [{ pointer: '/querystring/a~1b', detail: /^unknown query parameter \(this route takes / }])
})

t.test('a value of the wrong type is told the type with its article', async (t) => {
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  t.same((await client.post('/v1/users', { name: 5, email: ['anna@example.com'] })).data.errors, [
    { pointer: '/body/name', detail: 'must be a string' },
    { pointer: '/body/email', detail: 'must be a string' }
  ])
  t.same((await client.post('/v1/properties', { fields: [] })).data.errors, [{ pointer: '/body/fields', detail: 'must be an object' }])
  const ajv = (type: unknown) => clearerMessage({ keyword: 'type', instancePath: '/x', schemaPath: '#/x', params: { type }, message: `must be ${String(type)}` }).message
  t.equal(ajv('integer'), 'must be an integer')
  t.equal(ajv('array'), 'must be an array')
  t.equal(ajv('boolean'), 'must be a boolean')
  t.equal(ajv('number'), 'must be a number')
  t.equal(ajv('null'), 'must be null')
  t.equal(ajv(['string', 'number', 'boolean']), 'must be a string, a number or a boolean', 'a type that lists several')
})

t.test('a string, list or object of the wrong size is told the size in words', async (t) => {
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  t.same((await client.post('/v1/users', { name: '', email: 'anna@example.com' })).data.errors, [{ pointer: '/body/name', detail: 'must not be empty' }])
  t.same((await client.post('/v1/users', { name: 'x'.repeat(201), email: 'anna@example.com' })).data.errors,
    [{ pointer: '/body/name', detail: 'must be at most 200 characters long' }])
  const anna = await client.post('/v1/users', { name: 'Anna Berg', email: 'anna@example.com' })
  t.same((await client.patch(`/v1/users/${anna.data.id}`, {})).data.errors, [{ pointer: '/body', detail: 'must not be empty' }], 'an update that changes nothing')
  const service = await ctx.operator.post('/v1/marketplace-services', { name: 'Sizes', provider: 'P', webhookUrl: 'https://p.example/hook' })
  t.same((await ctx.operator.post(`/v1/marketplace-services/${service.data.id}/triggers`, { module: 'property', events: [] })).data.errors,
    [{ pointer: '/body/events', detail: 'must not be empty' }])
  const ajv = (keyword: string, limit: number, message: string) => clearerMessage({ keyword, instancePath: '/x', schemaPath: '#/x', params: { limit }, message }).message
  t.equal(ajv('minLength', 16, 'must NOT have fewer than 16 characters'), 'must be at least 16 characters long')
  t.equal(ajv('maxLength', 1, 'must NOT have more than 1 characters'), 'must be at most 1 character long')
  t.equal(ajv('minItems', 2, 'must NOT have fewer than 2 items'), 'must have at least 2 items')
  t.equal(ajv('maxItems', 2, 'must NOT have more than 2 items'), 'must have at most 2 items')
  t.equal(ajv('minProperties', 2, 'must NOT have fewer than 2 properties'), 'must have at least 2 properties')
  t.equal(ajv('maxProperties', 100, 'must NOT have more than 100 properties'), 'must have at most 100 properties')
  t.equal(ajv('maxProperties', 1, 'must NOT have more than 1 properties'), 'must have at most 1 property')
  t.equal(ajv('minItems', 1, 'must list something'), 'must list something', 'a message of our own stays')
})

t.test('a number out of range is told its bound in words', async (t) => {
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  t.same((await client.get('/v1/users?limit=0')).data.errors, [{ pointer: '/querystring/limit', detail: 'must be at least 1' }])
  t.same((await client.get('/v1/users?limit=201')).data.errors, [{ pointer: '/querystring/limit', detail: 'must be at most 200' }])
  const ajv = (keyword: string, comparison: string, limit: number) =>
    clearerMessage({ keyword, instancePath: '/x', schemaPath: '#/x', params: { comparison, limit }, message: `must be ${comparison} ${limit}` }).message
  t.equal(ajv('exclusiveMinimum', '>', 0), 'must be greater than 0')
  t.equal(ajv('exclusiveMaximum', '<', 2.5), 'must be less than 2.5')
  t.equal(clearerMessage({ keyword: 'minimum', instancePath: '/x', schemaPath: '#/x', params: { comparison: '>=', limit: 1 }, message: 'must be a positive count' }).message,
    'must be a positive count', 'a message of our own stays')
})

t.test('a string not of its pattern is told what the pattern means, not shown a regular expression', async (t) => {
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  t.same((await ctx.operator.post('/v1/tenants', { name: 'Webs', webId: 'web id' })).data.errors,
    [{ pointer: '/body/webId', detail: 'must be 1 to 64 characters, each a letter A–Z or a–z, a digit, _ or -' }])
  t.same((await client.post('/v1/properties', {}, { 'idempotency-key': 'two words' })).data.errors,
    [{ pointer: '/headers/idempotency-key', detail: 'must be printable ASCII without spaces' }])
  t.same((await client.post('/v1/process-templates', { name: 'a\u0000' })).data.errors,
    [{ pointer: '/body/name', detail: 'must not contain the NUL character (U+0000)' }])
  const ajv = (pattern: string, message = `must match pattern "${pattern}"`) =>
    clearerMessage({ keyword: 'pattern', instancePath: '/x', schemaPath: '#/x', params: { pattern }, message }).message
  t.equal(ajv('^[^\\u0000\\r\\n]*$'), 'must not contain a line break (CR or LF) or the NUL character (U+0000)')
  t.equal(ajv('^(property|address)\\.[^.]+(\\.[^.]+)*$'),
    'must be property.<field> or address.<field>, nested fields joined with dots, such as property.price or address.email')
  t.equal(ajv('^[a-z]+$'), 'must match the regular expression "^[a-z]+$"', 'a pattern without words shows itself')
  t.equal(ajv('^[a-z]+$', 'must be lower case'), 'must be lower case', 'a message of our own stays')

  // Every pattern a request is checked against has words; the ETag's is a response's, If-Match's is checked in words of its own.
  const patterns = new Set<string>()
  const collect = (value: unknown, key?: string): void => {
    if (key === 'pattern' && typeof value === 'string') patterns.add(value)
    else if (value !== null && typeof value === 'object') for (const [k, v] of Object.entries(value)) collect(v, k)
  }
  collect(DOCUMENT)
  const unchecked = ['^"\\d+"$', IF_MATCH_PATTERN]
  for (const pattern of [...patterns].filter((p) => !unchecked.includes(p))) t.notMatch(ajv(pattern), /regular expression/, pattern)
})

t.test('a list with a value twice is told which items are the same', async (t) => {
  const ctx = await setupApp(t)
  const service = await ctx.operator.post('/v1/marketplace-services', { name: 'Twice', provider: 'P', webhookUrl: 'https://twice.example/hook' })
  t.equal(service.statusCode, 201, service.body)
  const trigger = await ctx.operator.post(`/v1/marketplace-services/${service.data.id}/triggers`, { module: 'property', events: ['update', 'create', 'update'] })
  assertProblem(t, trigger, 400)
  t.same(trigger.data.errors, [{ pointer: '/body/events', detail: 'must not list the same value twice (items 1 and 3 are equal)' }])
})

t.test('a property left out is named in the pointer and the detail', async (t) => {
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  const created = await client.post('/v1/users', { name: 'Anna Berg' })
  assertProblem(t, created, 400)
  t.same(created.data.errors, [{ pointer: '/body/email', detail: '"email" is required' }])
  const ajv = (params: Record<string, unknown>, message: string) => clearerMessage({ keyword: 'required', instancePath: '/x', schemaPath: '#/x', params, message }).message
  t.equal(ajv({ missingProperty: 'a/b' }, 'must have required property \'a/b\''), '"a/b" is required')
  t.equal(ajv({ missingProperty: 'days' }, 'needs days'), 'needs days', 'a message of our own stays')
})

t.test('a string not of its format is told what the format is, by name and with an example', async (t) => {
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  t.same((await client.post('/v1/users', { name: 'Anna Berg', email: 'anna at example.com' })).data.errors,
    [{ pointer: '/body/email', detail: 'must be an e-mail address such as anna@example.com (format "email")' }])
  t.same((await client.get('/v1/users/anna')).data.errors,
    [{ pointer: '/params/id', detail: 'must be a UUID such as 01a2253b-4a10-7e2f-8c3b-7d9e1f2a4b56 (format "uuid")' }])
  const service = await ctx.operator.post('/v1/marketplace-services', { name: 'Formats', provider: 'P', webhookUrl: 'https://p.example/hook' })
  for (const since of ['yesterday', '2026-03-02T08:00:00']) {
    const recovered = await client.post(`/v1/marketplace-services/${service.data.id}/recover`, { since })
    assertProblem(t, recovered, 400)
    t.same(recovered.data.errors, [{
      pointer: '/body/since',
      detail: 'must be a date and time with its UTC offset (RFC 3339), such as 2026-03-02T08:00:00Z or 2026-03-02T09:00:00+01:00 (format "date-time")'
    }], since)
  }
  const ajv = (format: string) => clearerMessage({ keyword: 'format', instancePath: '/x', schemaPath: '#/x', params: { format }, message: `must match format "${format}"` }).message
  t.equal(ajv('date'), 'must be a date written YYYY-MM-DD, such as 2026-03-02 (format "date")')
  t.equal(ajv('uri'), 'must be an absolute URI such as https://example.com/hook (format "uri")')
  t.equal(ajv('ipv4'), 'must match format "ipv4"', 'a format without words of its own keeps Ajv\'s')
  t.equal(ajv('toString'), 'must match format "toString"')
})

t.test('each unique constraint a race is explained by exists under that name', async (t) => {
  const ctx = await setupApp(t)
  const { rows } = await sql<{ name: string }>`select relname as name from pg_class where relkind = 'i' and relname = any(${Object.keys(UNIQUE_CONFLICTS)})`.execute(ctx.db)
  t.same(rows.map((r) => r.name).sort(), Object.keys(UNIQUE_CONFLICTS).sort())
})

t.test('a list of thousands of items that each fail a union is refused in time linear in them, with an error for each', async (t) => {
  // Ajv gathered the errors of each call of the recursive expression schema by copying all gathered so far, and
  // the unions' errors were condensed by splicing each into the whole list: 4,000 such items (a 32 KB body) held
  // the event loop 79 s, every other request waiting.
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  const template = await client.post('/v1/process-templates', { name: 'Many operands' })
  // As many as a body may hold and have every error listed (ALL_ERRORS_MAX_VALUES, with the body's own seven).
  const items = ALL_ERRORS_MAX_VALUES - 7
  const body = JSON.stringify({ kind: 'decision', name: 'D', decision: { mode: 'automatic', condition: { and: Array.from({ length: items }, () => ({})) } } })
  const started = Date.now()
  const refused = await client.post(`/v1/process-templates/${template.data.id}/steps`, body, { 'content-type': 'application/json' })
  const ms = Date.now() - started
  assertProblem(t, refused, 400, /body does not match its schema/)
  t.equal(refused.data.errors.length, items, 'one error for each item')
  t.same(refused.data.errors.at(-1), { pointer: `/body/decision/condition/and/${items - 1}`, detail: 'must match one of the shapes the schema allows' })
  t.ok(ms < 10_000, `answered in ${ms} ms (under 1 s here; 20 s and more in the square of the items)`)
})

t.test('a body of more values than the errors are listed for is checked up to its first error, and says so', async (t) => {
  // Listing every error of a 1 MiB body of 300,000 failing items took 37 s of the event loop, some 3 GB and a 32 MB answer.
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  const template = await client.post('/v1/process-templates', { name: 'Very many operands' })
  const body = JSON.stringify({ kind: 'decision', name: 'D', decision: { mode: 'automatic', condition: { and: Array.from({ length: 300_000 }, () => ({})) } } })
  const started = Date.now()
  const refused = await client.post(`/v1/process-templates/${template.data.id}/steps`, body, { 'content-type': 'application/json' })
  const ms = Date.now() - started
  assertProblem(t, refused, 400, /body does not match its schema\. It holds more than 2,000 values, so it was checked up to its first error\./)
  t.equal(refused.data.errors.length, 1, 'its first error alone')
  t.ok(ms < 10_000, `answered in ${ms} ms`)

  const small = await client.post(`/v1/process-templates/${template.data.id}/steps`, { kind: 'decision', name: 'D', decision: { mode: 'automatic', condition: { and: [{}, {}] } } })
  assertProblem(t, small, 400, /body does not match its schema/)
  t.equal(small.data.detail, 'The request\'s body does not match its schema.', 'a smaller body says nothing of a first error')
  t.same(small.data.errors.filter((e: { pointer: string }) => e.pointer.startsWith('/body/decision/condition/and/')).length, 2, 'and has each of its errors listed')

  // A large body that is valid passes the first-error check as it would the other.
  const fields = Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`f${i}`, i]))
  const property = await client.post('/v1/properties', { fields })
  t.equal(property.statusCode, 201, property.body.slice(0, 300))
  t.equal(Object.keys(property.data.fields).length, 3000)
})

t.test('Ajv\'s gathering of a referenced schema\'s errors is rewritten to append in place: an Ajv whose code no longer matches fails here, not only in time', async (t) => {
  const written: string[] = []
  const ajv = new Ajv({ allErrors: true, strict: false, code: { process: (code) => (written.push(code), appendErrorsInPlace(code)) } })
  ajv.compile({ $id: 'Expression', anyOf: [{ type: 'string' }, { type: 'object', properties: { and: { type: 'array', items: { $ref: 'Expression' } } } }] })
  const code = written.join('\n')
  t.match(code, /vErrors\.concat\(/, 'Ajv gathers a reference\'s errors by copying them (what the rewrite is for)')
  t.notMatch(appendErrorsInPlace(code), /vErrors\.concat\(/, 'no copy is left')
})

t.test('a body one value over the limit is checked up to its first error; one at it lists every error', async (t) => {
  const ctx = await setupApp(t)
  const { client } = await ctx.newTenant()
  const template = await client.post('/v1/process-templates', { name: 'At the limit' })
  // The body's own seven values (itself, kind, name, decision, mode, condition, and) beside the items.
  const step = (items: number) => ({ kind: 'decision', name: 'D', decision: { mode: 'automatic', condition: { and: Array.from({ length: items }, () => ({})) } } })
  const at = await client.post(`/v1/process-templates/${template.data.id}/steps`, step(ALL_ERRORS_MAX_VALUES - 7))
  t.equal(at.data.detail, 'The request\'s body does not match its schema.')
  t.ok(at.data.errors.length >= ALL_ERRORS_MAX_VALUES - 7, 'every error listed')
  const over = await client.post(`/v1/process-templates/${template.data.id}/steps`, step(ALL_ERRORS_MAX_VALUES - 6))
  t.match(over.data.detail, /checked up to its first error/)
  t.equal(over.data.errors.length, 1)
})
