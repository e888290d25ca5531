import { randomUUID } from 'node:crypto'
import fc from 'fast-check'
import type { InjectOptions } from 'fastify'
import t from 'tap'
import { encodeCursor, listScope } from '../../src/lib/pagination.js'
import { fuzzTarget } from '../helpers/fuzz.js'
import { OPERATIONS, responseMismatch, sampleValid, type Operation, type Parameter, type Schema } from '../helpers/openapi.js'

// A property-based test of every operation in openapi/openapi.json: seeded random and boundary inputs
// (wrong types, missing and extra fields, huge and deep values, unicode and NUL, bad ids, dates,
// cursors, ETags, Idempotency-Keys, content types, invalid JSON, oversize bodies, other keys) and, for
// every answer: no 5xx, every status one the operation documents with a body its schema for that status
// takes, and every 4xx application/problem+json whose status is the HTTP status.
// FUZZ_RUNS=1000 npm test -- test/fuzz runs more cases per operation; FUZZ_SEED replays another seed.
const RUNS = Number(process.env.FUZZ_RUNS ?? 50)
const SEED = Number(process.env.FUZZ_SEED ?? 20_261_202)
t.setTimeout(Math.max(120_000, RUNS * OPERATIONS.length * 40))

const { ctx, world, owned: OWNED, catalogue: CATALOGUE, byField: BY_FIELD } = await fuzzTarget(t)

const MiB = 1024 * 1024
/** Cursors of the users list: other lists refuse them (400), the users list reads them. */
const USERS = listScope('/v1/users', {})
const deepText = (levels: number) => `${'{"a":'.repeat(levels)}1${'}'.repeat(levels)}`
const deepValue = (levels: number): unknown => JSON.parse(deepText(levels))

/** Percent-encodes the UTF-8 bytes of any string, lone surrogates included (encodeURIComponent throws on them). */
const encode = (text: string) => [...Buffer.from(text, 'utf8')].map((b) => (/[A-Za-z0-9_.~-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`)).join('')

const nastyText = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.constantFrom('', ' ', '\u0000', 'a\u0000b', '\uD800', '\uDFFF', '\u202E', '\uFEFF', '𝕏'.repeat(50), 'ü'.repeat(300), 'x'.repeat(10_000),
    '../../etc/passwd', '<script>alert(1)</script>', "' OR 1=1 --", '%ZZ', '\r\nX-Injected: 1', 'null', '0', '-1', 'NaN', '1e309', 'true',
    '2024-06-30T23:59:60Z', '0000-00-00T00:00:00Z', '9999-12-31T23:59:59.999Z', '2024-01-01T00:00:00+01', '2024-02-30T00:00:00Z', '1970-01-01T00:00:00Z',
    '-271821-04-20T00:00:00Z', '+275760-09-13T00:00:00.001Z', 'whsec_!!!!!!!!!!!!!!!!!!!!', 'http://169.254.169.254/', 'http://[::1]/', 'https://x.example/\u0000')
)
const nastyNumber = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(0, -0, -1, 1.5, 2 ** 31, 2 ** 53, -(2 ** 63), 1e308, Number.MAX_VALUE, Number.MIN_VALUE))
const nastyValue: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof(
    { arbitrary: nastyText, weight: 4 },
    { arbitrary: nastyNumber, weight: 2 },
    { arbitrary: fc.boolean(), weight: 1 },
    { arbitrary: fc.constant(null), weight: 1 },
    { arbitrary: fc.array(tie('value'), { maxLength: 3 }), weight: 1 },
    { arbitrary: fc.dictionary(nastyText, tie('value'), { maxKeys: 3 }), weight: 1 },
    { arbitrary: fc.constantFrom(deepValue(33), deepValue(200), [[[[[]]]]], Array.from({ length: 10_000 }, (_, i) => i), { ['x'.repeat(1000)]: 'y'.repeat(300_000) }), weight: 1 }
  )
})).value

/** Bodies that are not what a JSON parser or a schema expects, as text. */
const rawBody = fc.constantFrom('{', '{"name":', '[', 'nul', '{"a":1}{"b":2}', '\u0000', '\uFEFF{}', '{"__proto__":{"admin":true}}', '{"constructor":{"prototype":{"x":1}}}',
  deepText(5000), deepText(40), `{"fields":${deepText(100_000)}}`, '"just a string"', '12345678901234567890', 'x'.repeat(MiB + 1), `{"name":"${'x'.repeat(MiB)}"}`, '')

const contentType = fc.constantFrom('application/json', 'application/json', 'application/json', 'application/json; charset=utf-8', 'APPLICATION/JSON', 'application/json; charset=latin1',
  'text/plain', 'application/x-www-form-urlencoded', 'application/octet-stream', 'multipart/form-data; boundary=x', 'application/merge-patch+json', 'application/problem+json', 'garbage', '')

const badSegment = fc.oneof(
  fc.constantFrom('not-a-uuid', '%ZZ', '%', '%00', '%2e%2e', '..', '0', '-1', 'a'.repeat(101), 'a'.repeat(100), '00000000-0000-0000-0000-000000000000',
    'FFFFFFFF-FFFF-4FFF-BFFF-FFFFFFFFFFFF', 'null', '%E2%80%AE', '%F0%9F%92%A9', '%C0%AF', '%FF', `${randomUUID()}%00`, ` ${randomUUID()}`.replace(' ', '%20')),
  fc.string({ unit: 'binary', maxLength: 60 }).map(encode)
)

/** An id for a path parameter: A's own, a random one, or something that is no id at all. */
function segment(op: Operation, name: string): fc.Arbitrary<string> {
  const owned = Object.entries(OWNED).find(([prefix]) => op.path.startsWith(prefix))?.[1]?.[name] ?? CATALOGUE[name]
  return fc.oneof(
    { arbitrary: fc.constant(owned ?? randomUUID()), weight: 4 },
    { arbitrary: fc.constantFrom(world.hidden.id, world.instance.steps[1].id), weight: 1 },
    { arbitrary: fc.uuid(), weight: 1 },
    { arbitrary: badSegment, weight: 2 }
  )
}

/** A query value: a fitting one for the parameter, or anything. */
function queryValue(param: Parameter): fc.Arbitrary<string> {
  const s = param.schema
  const fitting = s.format === 'uuid' ? fc.constantFrom(...Object.values(BY_FIELD), randomUUID())
    : param.name === 'cursor' ? fc.oneof(fc.uuid().map((id) => encodeCursor(USERS, id)), fc.constantFrom(encodeCursor(USERS, world.user.id), Buffer.from(`v1:${world.user.id}`).toString('base64url'), 'djE6', 'garbage', Buffer.from('v1:../../').toString('base64url')), fc.base64String({ maxLength: 200 }))
      : param.name === 'fields' ? fc.oneof(fc.constantFrom('{"price":1}', '{}', '[]', '{', 'null', '"x"', deepText(33), deepText(900)), nastyValue.map((v) => JSON.stringify({ k: v }) ?? ''))
        : s.type === 'integer' ? fc.oneof(fc.integer({ min: -5, max: 300 }).map(String), fc.constantFrom('1.5', '1e3', '0x10', '9007199254740993', '-0', ''))
          : s.type === 'boolean' ? fc.constantFrom('true', 'false', '1', '0', 'yes', '')
            : s.enum ? fc.constantFrom(...s.enum.map(String), 'other')
              : nastyText
  return fc.oneof({ arbitrary: fitting, weight: 3 }, { arbitrary: nastyText, weight: 1 })
}

function queryString(op: Operation): fc.Arbitrary<string> {
  const params = op.parameters.filter((p) => p.in === 'query')
  const values = fc.tuple(...params.map((p) => sometimes(queryValue(p), 2)))
  const extra = sometimes(fc.tuple(fc.constantFrom('limit', 'cursor', 'extra', 'a[b]', '__proto__', 'x'.repeat(300)), nastyText), 4)
  return fc.tuple(values, extra).map(([given, more]) => {
    const pairs: [string, string][] = params.flatMap((p, i) => (given[i] === undefined ? [] : [[p.name, given[i]!] as [string, string]]))
    if (more) pairs.push(more)
    return pairs.length === 0 ? '' : `?${pairs.map(([k, v]) => `${encode(k)}=${encode(v)}`).join('&')}`
  })
}

/** A body: a schema-valid sample with a few fields replaced or removed, any JSON, raw text, or none. */
function body(op: Operation): fc.Arbitrary<{ text?: string }> {
  const base = op.body ? sampleValid(op.body, { uuid: (name) => BY_FIELD[name] ?? randomUUID() }) : {}
  const keys = [...Object.keys((op.body as Schema | undefined)?.properties ?? {}), 'extra']
  const edit = fc.oneof(fc.record({ key: fc.constantFrom(...keys), value: nastyValue }), fc.record({ key: fc.constantFrom(...keys), value: fc.constant(undefined) }))
  const mutated = fc.array(edit, { maxLength: 3 }).map((edits) => {
    const value: Record<string, unknown> = typeof base === 'object' && base !== null ? { ...(base as object) } : {}
    for (const { key, value: v } of edits) if (v === undefined) delete value[key]; else value[key] = v
    return { text: JSON.stringify(value) }
  })
  const json = fc.oneof(mutated, nastyValue.map((v) => ({ text: JSON.stringify(v) ?? 'null' })))
  // Too deep for JSON.stringify, so written as text: a field nested thousands of levels deep.
  const deepField = fc.tuple(fc.constantFrom(...keys), fc.constantFrom(40, 5000, 20_000)).map(([key, levels]) => ({ text: `{"${key}":${deepText(levels)}}` }))
  return op.body
    ? fc.oneof({ arbitrary: mutated, weight: 5 }, { arbitrary: json, weight: 1 }, { arbitrary: rawBody.map((text) => ({ text })), weight: 1 },
      { arbitrary: deepField, weight: 1 }, { arbitrary: fc.constant({}), weight: 1 })
    : fc.oneof({ arbitrary: fc.constant({}), weight: 6 }, { arbitrary: json, weight: 1 }, { arbitrary: rawBody.map((text) => ({ text })), weight: 1 })
}

const printable = fc.string({ unit: 'binary-ascii', maxLength: 40 }).map((s) => s.replace(/[^\x20-\x7e]/g, ''))
const authorization = fc.oneof(
  { arbitrary: fc.constantFrom(`Bearer ${world.a.key}`, `Bearer ${world.a.key}`, `Bearer ${world.b.key}`), weight: 8 },
  { arbitrary: fc.constantFrom(undefined, `Bearer ${world.claim}`, `Bearer ${world.revokedKey}`, `bearer ${world.a.key}`, world.a.key, 'Bearer', 'Bearer ',
    `Bearer ${'x'.repeat(5000)}`, 'Basic dXNlcjpwYXNz', `Bearer ${world.claim.slice(0, -2)}xx`, 'Bearer bcl_e30.', 'Bearer bcl_.'), weight: 3 },
  { arbitrary: fc.constant('operator'), weight: 3 },
  { arbitrary: printable.map((s) => `Bearer ${s}`), weight: 1 }
)

function headers(op: Operation): fc.Arbitrary<Record<string, string | undefined>> {
  const tags = fc.constantFrom('"1"', '"2"', 'W/"1"', '*', '1', 'garbage', '"99999999999"', '""', '"-1"', '"1", "2"')
  const ifMatch = sometimes(tags, op.parameters.some((p) => p.name === 'if-match') ? 2 : 6)
  const ifNoneMatch = sometimes(tags, op.parameters.some((p) => p.name === 'if-none-match') ? 2 : 6)
  const idempotency = sometimes(fc.oneof(fc.constantFrom('', 'tour-1', 'x'.repeat(300), 'x'.repeat(5000), 'ünïcödé'), printable), op.name === 'POST /v1/process-instances' ? 2 : 8)
  const accept = sometimes(fc.constantFrom('*/*', 'application/json', 'text/html', 'application/json;q=0', 'application/problem+json', 'garbage'), 10)
  return fc.record({ 'if-match': ifMatch, 'if-none-match': ifNoneMatch, 'idempotency-key': idempotency, accept, 'content-type': sometimes(contentType, 5) })
}

/** Absent in most cases, the value in one of `every`. */
function sometimes<T>(arb: fc.Arbitrary<T>, every: number): fc.Arbitrary<T | undefined> {
  return fc.oneof({ arbitrary: fc.constant(undefined), weight: every - 1 }, { arbitrary: arb, weight: 1 })
}

const method = (op: Operation) => fc.oneof({ arbitrary: fc.constant(op.method), weight: 12 }, { arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD'), weight: 1 })

function request(op: Operation): fc.Arbitrary<InjectOptions> {
  const path = fc.tuple(...[...op.path.matchAll(/\{(\w+)\}/g)].map(([, name]) => segment(op, name!)))
    .map((ids) => { let i = 0; return op.path.replace(/\{\w+\}/g, () => ids[i++]!) })
  return fc.record({ method: method(op), path, query: queryString(op), auth: authorization, headers: headers(op), body: body(op) })
    .map(({ method, path, query, auth, headers: h, body: b }) => {
      const all: Record<string, string> = {}
      for (const [k, v] of Object.entries(h)) if (v !== undefined) all[k] = v
      if (auth !== undefined) all.authorization = auth === 'operator' ? `Bearer ${ctx.operatorKey}` : auth
      if (b.text !== undefined && all['content-type'] === undefined) all['content-type'] = 'application/json'
      if (b.text === undefined) delete all['content-type']
      return { method: method as InjectOptions['method'], url: `${path}${query}`, headers: all, ...(b.text === undefined ? {} : { payload: b.text }) }
    })
}


/** The answers any operation may give besides its own (the document's description says so). */
const PROTOCOL_STATUSES = [406, 413, 414, 415]

/** Where a request's path leads: the operation's own route, its collection's (an empty last id), or another route altogether. */
type Route = 'own' | 'collection' | 'other'

/**
 * Why an answer breaks the contract, or undefined. A HEAD answer has the headers of a GET but no body.
 * Called with the operation's own method on its own route, the status must be one the operation documents
 * and the body must match that status's schema; on its collection's route an error may also be 404 or 405.
 */
function breach(op: Operation, method: string, status: number, contentType: string, body: string, route: Route = 'own'): string | undefined {
  if (status >= 500) return `server error ${status}: ${body.slice(0, 300)}`
  if (method === op.method && route === 'own') {
    const mismatch = responseMismatch(op, status, contentType, body, PROTOCOL_STATUSES)
    if (mismatch) return mismatch
  }
  if (status < 400) return undefined
  const elsewhere = route === 'collection' ? [404, 405] : []
  if (method === op.method && route !== 'other' && !op.responses.includes(status) && !PROTOCOL_STATUSES.includes(status) && !elsewhere.includes(status)) {
    return `${status}, which ${op.name} does not document: ${body.slice(0, 200)}`
  }
  if (!/^application\/problem\+json/.test(contentType)) return `${status} is ${contentType || 'without a content type'}: ${body.slice(0, 200)}`
  if (method === 'HEAD') return body === '' ? undefined : 'a HEAD answer with a body'
  let problem: { status?: unknown; title?: unknown; type?: unknown; detail?: unknown }
  try {
    problem = JSON.parse(body)
  } catch {
    return `${status} has no JSON body: ${body.slice(0, 200)}`
  }
  if (problem.status !== status) return `${status} says status ${String(problem.status)}`
  if (typeof problem.title !== 'string' || typeof problem.type !== 'string' || typeof problem.detail !== 'string') return `${status} lacks type, title or detail`
  return undefined
}

/**
 * An empty last id leaves a trailing slash, which names the collection. An id of `..` (or `%2e%2e`) is a
 * dot segment, which light-my-request resolves as a WHATWG URL does: `/v1/x/{id}/y/..` reaches `/v1/x/{id}`,
 * another operation, whose answers are its own.
 */
function routeOf(url: string): Route {
  const sent = url.split('?')[0]!
  if (new URL(sent, 'http://localhost').pathname !== sent) return 'other'
  return sent.endsWith('/') ? 'collection' : 'own'
}

const counts = new Map<number, number>()
let total = 0

for (const [index, op] of OPERATIONS.entries()) {
  t.test(op.name, async (t) => {
    const seen = new Map<number, number>()
    const result = await fc.check(fc.asyncProperty(request(op), async (options) => {
      const response = await ctx.app.inject(options)
      total += 1
      seen.set(response.statusCode, (seen.get(response.statusCode) ?? 0) + 1)
      counts.set(response.statusCode, (counts.get(response.statusCode) ?? 0) + 1)
      const problem = breach(op, String(options.method), response.statusCode, String(response.headers['content-type'] ?? ''), response.body, routeOf(String(options.url)))
      if (problem) throw new Error(problem)
    }), { numRuns: RUNS, seed: SEED + index })
    t.comment(`${op.name}: ${result.numRuns} cases, ${[...seen].sort(([x], [y]) => x - y).map(([s, n]) => `${s}×${n}`).join(' ')}`)
    t.notOk(result.failed, result.failed ? describeFailure(result) : `${RUNS} cases`)
  })
}

t.test('counts', async (t) => {
  t.comment(`fuzz: ${OPERATIONS.length} operations × ${RUNS} cases = ${total} requests (seed ${SEED}); ` +
    [...counts].sort(([x], [y]) => x - y).map(([s, n]) => `${s}×${n}`).join(' '))
  t.ok(total >= OPERATIONS.length, `${total} requests`)
})

/** A failure in a few lines: the smallest failing request (shortened), what broke, and how to replay it. */
function describeFailure(result: fc.RunDetails<[InjectOptions]>): string {
  const [options] = result.counterexample ?? [{} as InjectOptions]
  const payload = typeof options.payload === 'string' ? options.payload : ''
  const error = result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance)
  return `${error}\n  request: ${String(options.method)} ${String(options.url).slice(0, 300)}\n  headers: ${JSON.stringify(options.headers).slice(0, 300)}` +
    `\n  body (${payload.length} chars): ${payload.slice(0, 300)}\n  replay: FUZZ_SEED=${SEED} (seed ${result.seed}, path ${result.counterexamplePath})`
}
