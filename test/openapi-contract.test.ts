import t from 'tap'
import { contractGaps, type OpenApiDocument } from '../scripts/openapi-contract.js'
import { DOCUMENT } from './helpers/openapi.js'

const document = DOCUMENT as unknown as OpenApiDocument

t.test('every operation of the checked-in document has what a client generator needs', async (t) => {
  t.same(contractGaps(document), [], 'operationId, success descriptions, body examples, declared headers, enums, real nullables')
})

t.test('the document names the answers any operation may give besides its own (test/fuzz/api.test.ts holds it to them)', async (t) => {
  const { description } = (DOCUMENT as unknown as { info: { description: string } }).info
  for (const status of [406, 408, 413, 414, 415, 431]) t.match(description, String(status))
})

t.test('operation ids are verbs and nouns, one per operation', async (t) => {
  const ids = Object.values(document.paths).flatMap((methods) => Object.values(methods).map((op) => op.operationId))
  t.equal(new Set(ids).size, ids.length)
  const byRoute = (method: string, path: string) => document.paths[path]?.[method]?.operationId
  t.equal(byRoute('post', '/v1/process-instances'), 'createProcessInstance')
  t.equal(byRoute('get', '/v1/process-instances'), 'listProcessInstances')
  t.equal(byRoute('get', '/v1/process-instances/{id}'), 'getProcessInstance')
  t.equal(byRoute('post', '/v1/process-instances/{id}/advance'), 'advanceProcessInstance')
  t.equal(byRoute('patch', '/v1/properties/{id}'), 'updateProperty')
  t.equal(byRoute('get', '/v1/addresses/{id}/activities'), 'listAddressActivities')
})

t.test('the check names what an operation lacks', async (t) => {
  const lacking: OpenApiDocument = {
    paths: {
      '/health/live': {
        get: { operationId: 'getLiveness', responses: { 200: { description: 'Up' }, 429: { description: 'Too many', headers: { 'Retry-After': {} } } } }
      },
      '/v1/things': {
        post: {
          requestBody: { content: { 'application/json': { schema: { type: 'object' } } } },
          responses: { 201: { description: 'Default Response' } }
        }
      },
      '/v1/things/{id}': {
        patch: {
          operationId: 'thing',
          parameters: [{ in: 'header', name: 'if-match', schema: { type: 'string' } }],
          responses: {
            200: { description: 'The thing', content: { 'application/json': { schema: { $ref: '#/components/schemas/Thing' } } } },
            412: { description: 'Stale' },
            429: { description: 'Too many' }
          }
        }
      }
    },
    components: {
      schemas: {
        Thing: {
          type: 'object',
          properties: {
            version: { type: 'integer' },
            state: { type: 'string' },
            owner: { anyOf: [{ $ref: '#/components/schemas/Thing' }, { type: 'object', nullable: true, enum: [null] }] },
            tags: { allOf: [{ type: 'array', items: { type: 'string' }, examples: [['a']] }] },
            parent: { allOf: [{ $ref: '#/components/schemas/Thing' }], nullable: true },
            value: { anyOf: [{ type: 'string' }, { type: 'number' }], nullable: true }
          }
        }
      }
    }
  }
  t.same(contractGaps(lacking).sort(), [
    'GET /health/live: 429, which a probe never answers (the rate limits do not count it)',
    'PATCH /v1/things/{id}: 200 answers a versioned resource without declaring ETag',
    'PATCH /v1/things/{id}: 412 does not declare the current ETag',
    'PATCH /v1/things/{id}: 429 does not declare Retry-After',
    'PATCH /v1/things/{id}: If-Match has no pattern',
    'PATCH /v1/things/{id}: operationId thing is not a verb and a noun in camelCase',
    'POST /v1/things: 201 does not declare Location',
    'POST /v1/things: 201 has no description',
    'POST /v1/things: no 429 (every route but the probes is rate-limited)',
    'POST /v1/things: no operationId',
    'POST /v1/things: the application/json request body has no example',
    'Thing.state: a state typed as any string, not an enum',
    'components.schemas.Thing.properties.owner.anyOf[1]: a null-only schema',
    'components.schemas.Thing.properties.tags.allOf[0]: examples, which an OpenAPI 3.0 schema does not take (example)',
    'components.schemas.Thing.properties.parent: nullable without a type beside it, which takes no null',
    'components.schemas.Thing.properties.value: nullable without a type beside it, which takes no null'
  ].sort())
})

t.test('a GET that answers an ETag declares the 304 an If-None-Match naming it gets', async (t) => {
  const etag = { ETag: { schema: { type: 'string' } } }
  const reading = (responses: OpenApiDocument['paths'][string][string]['responses']): OpenApiDocument => ({
    paths: { '/v1/things/{id}': { get: { operationId: 'getThing', responses: { ...responses, 429: { description: 'Too many', headers: { 'Retry-After': {} } } } } } }
  })
  t.same(contractGaps(reading({ 200: { description: 'The thing', headers: etag } })),
    ['GET /v1/things/{id}: answers an ETag without a 304 that declares it (If-None-Match)'])
  t.same(contractGaps(reading({ 200: { description: 'The thing', headers: etag }, 304: { description: 'Not modified' } })),
    ['GET /v1/things/{id}: answers an ETag without a 304 that declares it (If-None-Match)'], 'the 304 carries the ETag it was asked about')
  t.same(contractGaps(reading({ 200: { description: 'The thing', headers: etag }, 304: { description: 'Not modified', headers: etag } })), [])
  t.same(contractGaps(reading({ 200: { description: 'Things' } })), [], 'a read without an ETag needs none')
  const get = document.paths['/v1/process-instances/{id}']?.get
  t.match(get?.responses['304'], { description: 'Not modified: the If-None-Match names the current ETag', headers: { ETag: {} } })
  t.match(get?.parameters, [{ in: 'path', name: 'id' }, { in: 'header', name: 'if-none-match', required: false }])
})
