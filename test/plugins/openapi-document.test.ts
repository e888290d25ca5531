import { randomUUID } from 'node:crypto'
import t from 'tap'
import { OPTIONAL_BODY, tidyDocument } from '../../src/plugins/openapi-document.js'
import { setupApp } from '../helpers/app.js'
import { DOCUMENT, fillPath, OPERATIONS, responseMismatch } from '../helpers/openapi.js'
import { buildWorld } from '../helpers/world.js'

const NULL = { type: 'object', nullable: true, enum: [null] }
const tidy = (schema: object) => (tidyDocument({ components: { schemas: { S: schema } } }).components.schemas.S)

t.test('a union with null becomes nullable beside a type, the only place OpenAPI 3.0.3 lets nullable add null', async (t) => {
  t.same(tidy({ anyOf: [{ type: 'string', maxLength: 3 }, { type: 'number' }, NULL] }), { anyOf: [{ type: 'string', maxLength: 3, nullable: true }, { type: 'number' }] },
    'on the first typed member of a union that stays')
  t.same(tidy({ anyOf: [{ type: 'string', enum: ['a'] }, { type: 'string', enum: ['b'] }, { type: 'object', properties: {} }, NULL] }),
    { anyOf: [{ type: 'string', enum: ['a', 'b', null], nullable: true }, { type: 'object', properties: {} }] }, 'a member\'s enum lists null')
  t.same(tidy({ anyOf: [{ type: 'object', properties: {}, description: 'member' }, NULL], description: 'where it is used' }),
    { type: 'object', properties: {}, description: 'where it is used', nullable: true }, 'one member merges, the union\'s description kept')
})

t.test('a nullable reference: the copy of an object schema, or the reference to a schema that takes null itself', async (t) => {
  const D = { $id: 'D', type: 'object', required: ['id'], properties: { id: { type: 'string' } } }
  const E = { anyOf: [{ type: 'string' }, { type: 'number' }, NULL] }
  const document = (schemas: Record<string, unknown>) => tidyDocument({ components: { schemas } }).components.schemas as Record<string, unknown>
  const ref = (name: string) => ({ anyOf: [{ $ref: `#/components/schemas/${name}` }, NULL], description: 'here' })
  t.same(document({ D, S: ref('D'), T: { type: 'object', properties: { d: { $ref: '#/components/schemas/D' } } } }).S,
    { type: 'object', required: ['id'], properties: { id: { type: 'string' } }, description: 'here', nullable: true })
  t.ok('D' in document({ D: structuredClone(D), S: ref('D') }), 'a schema only referred to as nullable stays a component, a named type for clients')
  // S refers to D as nullable, and D to X: whichever comes first, no copy keeps a nullable beside no type.
  const X = { type: 'object', properties: { x: { type: 'string' } } }
  const nested = (order: string[]) => {
    const all: Record<string, unknown> = { S: ref('D'), D: { type: 'object', properties: { x: ref('X') } }, X }
    return document(Object.fromEntries(order.map((name) => [name, structuredClone(all[name])])))
  }
  for (const order of [['S', 'D', 'X'], ['D', 'S', 'X'], ['X', 'D', 'S']]) {
    const schemas = nested(order)
    t.notMatch(JSON.stringify(schemas), /"allOf"/, `${order.join(', ')}: every nullable reference copied`)
    t.same((schemas.S as { properties: { x: unknown } }).properties.x, { type: 'object', properties: { x: { type: 'string' } }, description: 'here', nullable: true })
  }
  // A schema that refers to itself as nullable: the copying ends.
  const N = { type: 'object', properties: { parent: ref('N') } }
  t.match(document({ N: structuredClone(N), S: ref('N') }).S, { type: 'object', nullable: true, properties: { parent: { type: 'object', nullable: true } } })
  t.same(document({ E, S: ref('E') }).S, { allOf: [{ $ref: '#/components/schemas/E' }], description: 'here' }, 'a schema that takes null keeps its name')
})

t.test('string literals become one enum', async (t) => {
  t.same(tidy({ anyOf: [{ type: 'string', enum: ['a'] }, { type: 'string', enum: ['b'] }] }), { type: 'string', enum: ['a', 'b'] })
  t.same(tidy({ anyOf: [{ type: 'string', enum: ['a'] }, { type: 'string', enum: ['b'] }, NULL] }),
    { type: 'string', enum: ['a', 'b', null], nullable: true }, 'a nullable enum lists null, as OpenAPI 3.0.3 asks')
  t.same(tidy({ anyOf: [{ type: 'string', enum: ['a'] }, { type: 'string', enum: ['b'] }, { type: 'object', properties: {} }] }),
    { anyOf: [{ type: 'string', enum: ['a', 'b'] }, { type: 'object', properties: {} }] }, 'beside an object, the literals still merge')
})

t.test('a union of one member is that member', async (t) => {
  t.same(tidy({ anyOf: [{ type: 'string', format: 'uuid' }], description: 'the step' }), { type: 'string', format: 'uuid', description: 'the step' })
})

t.test('unions of objects, and nested schemas, are left as they mean', async (t) => {
  const start = { anyOf: [{ type: 'object', properties: { mode: { type: 'string', enum: ['a'] } } }, { type: 'object', properties: { days: { type: 'integer' } } }] }
  t.same(tidy(structuredClone(start)), start)
  t.same(tidy({ type: 'object', properties: { e: { anyOf: [{ type: 'string', enum: ['x'] }, NULL] } } }),
    { type: 'object', properties: { e: { type: 'string', enum: ['x', null], nullable: true } } })
})

t.test('examples that @fastify/swagger left in a union\'s member become the one example an OpenAPI 3.0 schema takes', async (t) => {
  const member = { type: 'object', properties: { on: { type: 'string' } }, description: 'm', examples: [{ on: 'a' }, { on: 'b' }] }
  t.same(tidy({ anyOf: [member, NULL], description: 'd' }),
    { type: 'object', properties: { on: { type: 'string' } }, description: 'd', example: { on: 'a' }, nullable: true })
  t.same(tidy({ type: 'string', example: 'x', examples: ['y'] }), { type: 'string', example: 'x' }, 'an example given stays')
  const media = { schema: { type: 'object' }, examples: { first: { value: {} } } }
  t.same(tidyDocument({ paths: { '/x': { post: { requestBody: { content: { 'application/json': structuredClone(media) } } } } } }).paths['/x'].post.requestBody.content['application/json'],
    media, 'a Media Type\'s examples, a map, stay')
})

t.test('If-Match parameters get the pattern the server checks', async (t) => {
  const document = tidyDocument({ paths: { '/x': { patch: { parameters: [{ in: 'header', name: 'if-match', schema: { type: 'string' } }] } } } })
  t.match(document.paths['/x'].patch.parameters[0]!.schema, { type: 'string', pattern: /W\// })
})

t.test('a GET whose 200 carries an ETag gets If-None-Match and a 304 with the ETag; other reads and writes do not', async (t) => {
  const etag = { ETag: { schema: { type: 'string', pattern: '^"\\d+"$' }, description: 'The version' } }
  const document = tidyDocument({
    paths: {
      '/x/{id}': { get: { parameters: [{ in: 'path', name: 'id' }], responses: { 200: { description: 'X', headers: etag } } }, patch: { responses: { 200: { description: 'X', headers: etag } } } },
      '/x': { get: { responses: { 200: { description: 'Xs' } } } }
    }
  }) as unknown as { paths: Record<string, Record<string, { parameters?: unknown[]; responses: Record<string, unknown> }>> }
  t.match(document.paths['/x/{id}']!.get!.responses['304'], { description: /If-None-Match/, headers: { ETag: { schema: { pattern: '^"\\d+"$' } } } })
  t.match(document.paths['/x/{id}']!.get!.parameters, [{ in: 'path', name: 'id' }, { in: 'header', name: 'if-none-match', required: false }])
  t.notOk(document.paths['/x/{id}']!.patch!.responses['304'], 'a write has none')
  t.notOk(document.paths['/x']!.get!.responses['304'], 'a read without an ETag has none')
  t.notOk(document.paths['/x']!.get!.parameters)
})

t.test('a body marked optional is declared not required, and the mark goes', async (t) => {
  const body = (schema: object) => ({ required: true, content: { 'application/json': { schema } } })
  const document = tidyDocument({
    paths: {
      '/x': { post: { requestBody: body({ type: 'object', [OPTIONAL_BODY]: true }) } },
      '/y': { post: { requestBody: body({ type: 'object' }) } }
    }
  })
  t.same(document.paths['/x'].post.requestBody, { required: false, content: { 'application/json': { schema: { type: 'object' } } } })
  t.same(document.paths['/y'].post.requestBody, body({ type: 'object' }))
})

t.test('the checked-in document leaves a request body out exactly where its schema takes an empty object', async (t) => {
  for (const op of OPERATIONS.filter((o) => o.body !== undefined)) {
    const { requestBody } = DOCUMENT.paths[op.path]![op.method.toLowerCase()]! as { requestBody: { required?: boolean } }
    const takesEmpty = op.body!.type === 'object' && (op.body!.required ?? []).length === 0 && (op.body!.minProperties ?? 0) === 0
    t.equal(requestBody.required !== true, takesEmpty, op.name)
  }
})

t.test('the checked-in document requires a request body exactly where the server refuses a request without one', async (t) => {
  const ctx = await setupApp(t)
  const tenant = await ctx.newTenant()
  for (const op of OPERATIONS.filter((o) => o.body !== undefined)) {
    // Ids of nothing: a route that takes no body goes on to 404; one that needs it stops at the schema first.
    const url = fillPath(op, () => randomUUID())
    const operatorRoute = op.path.startsWith('/v1/tenants') || (op.path.startsWith('/v1/marketplace-services') && !/\/(activation|recover)$/.test(op.path))
    const response = await (operatorRoute ? ctx.operator : tenant.client)[op.method.toLowerCase() as 'post'](url)
    const refused = response.statusCode === 400 && response.data.errors?.[0]?.pointer === '/body'
    const { requestBody } = DOCUMENT.paths[op.path]![op.method.toLowerCase()]! as { requestBody: { required?: boolean } }
    t.equal(requestBody.required === true, refused, `${op.name}: ${response.statusCode} without a body`)
  }
})

t.test('answers with nulls match the checked-in document as OpenAPI 3.0.3 reads nullable (beside a type only)', async (t) => {
  const ctx = await setupApp(t)
  const world = await buildWorld(ctx)
  const reads = {
    'GET /v1/process-instances/{id}': `/v1/process-instances/${world.instance.id}`,
    'GET /v1/process-templates/{id}': `/v1/process-templates/${world.template.id}`,
    'GET /v1/process-templates/{id}/steps': `/v1/process-templates/${world.template.id}/steps`,
    'GET /v1/marketplace-services/{id}/parameters': `/v1/marketplace-services/${world.service.id}/parameters`
  }
  const instance = (await world.a.client.get(reads['GET /v1/process-instances/{id}'])).data
  t.match(instance.steps, [{ kind: 'webhook', email: null, followUp: null }, { kind: 'task', delivery: null }], 'nulls a validator must take')
  for (const [name, url] of Object.entries(reads)) {
    const op = OPERATIONS.find((o) => o.name === name)!
    const response = await world.a.client.get(url)
    t.equal(responseMismatch(op, response.statusCode, String(response.headers['content-type']), response.body), undefined, name)
  }
})
