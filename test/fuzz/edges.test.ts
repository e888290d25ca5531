import type { InjectOptions } from 'fastify'
import t from 'tap'
import { fuzzTarget } from '../helpers/fuzz.js'
import { OPERATIONS, responseMismatch, sampleValid, type Operation, type Schema } from '../helpers/openapi.js'

// The edges api.test.ts samples only now and then, each sent to every operation in openapi/openapi.json,
// in a fixed order (no seed to replay): hostile values at every depth of a body (api.test.ts replaces
// top-level fields), JSON scalars and duplicate keys, content types, headers sent twice, If-Match,
// Idempotency-Key and Authorization oddities, ids in other spellings, and query strings that are not
// well-formed (a bad escape, a name repeated or with brackets, no "="). Every answer: no 5xx, and every
// 4xx an application/problem+json whose status is the HTTP status and one the operation documents.

const { ctx, world, owned: OWNED, catalogue: CATALOGUE, byField: BY_FIELD } = await fuzzTarget(t)

/** JSON texts for a value: types a schema does not expect, numbers past what a double or a column holds, odd text and dates. */
const VALUES = ['null', '[]', '{}', '"x"', 'true', '""', '-0', '9007199254740993', '9223372036854775808', '1e308', '-1', '1.5', '[null]', '[{}]',
  '"\\ud800"', '"a\\u0000b"', '"\\u202e\\u200f"', `"${'y'.repeat(100_000)}"`, `"${world.user.id.toUpperCase()}"`, `"{${world.user.id}}"`,
  '"2024-02-30T00:00:00Z"', '"10000-01-01T00:00:00Z"', '"0000-01-01T00:00:00Z"', '"2024-01-01t00:00:00z"', '"Mars/Phobos"', '"../../etc/passwd"']

const CONTENT_TYPES = ['application/json; charset=latin1', 'application/json; charset=utf-16', 'application/merge-patch+json', 'application/json-patch+json',
  'text/json', 'application/jsonx', 'application/json ; charset=utf-8', 'application/json;;', 'application/json, text/plain', '*/*', ';', 'Application/Json; Charset=UTF-8']

const IF_MATCH = ['*', 'W/"1"', '"1", "2"', '*, "1"', ',,,', '"abc"', '"1"\t', 'W/*', `"${'9'.repeat(10)}"`, `${', '.repeat(3000)}x`, '"1",'.repeat(2000), '"+1"', '\u00ff']
const IDEMPOTENCY_KEYS = ['', 'a', 'k'.repeat(10_000), 'k'.repeat(201), 'a\tb', 'a b', '\u00e9', 'a\u007fb']
const AUTHORIZATIONS = ['Bearer', 'Bearer  x', `Bearer  ${world.a.key}`, `Bearer ${world.a.key} x`, 'Basic Zm9vOmJhcg==', `Bearer ${'x'.repeat(12_000)}`,
  'Bearer \u00ff', `BEARER ${world.a.key}`, `Bearer bcl_${'A'.repeat(100)}.${'B'.repeat(43)}`, 'Bearer bcl_%%%.%%%', `Bearer bcl_bnVsbA.${'A'.repeat(43)}`,
  `Bearer bcl_W10.${'A'.repeat(43)}`, `Bearer ${world.a.key.toUpperCase()}`, `Bearer ${world.claim}${world.claim}`]

/** Ids spelled otherwise: upper case, braces, a trailing dot, an escaped slash, .., unicode, a URN, no dashes, the nil and max UUIDs. */
const ID_SPELLINGS: ((id: string) => string)[] = [(id) => id.toUpperCase(), (id) => `%7B${id}%7D`, (id) => `${id}.`, (id) => `${id}%2F..`, () => '..',
  () => '%C3%BC', (id) => `${id}%00`, (id) => `urn:uuid:${id}`, (id) => id.replace(/-/g, ''), () => '00000000-0000-0000-0000-000000000000',
  () => 'ffffffff-ffff-ffff-ffff-ffffffffffff', (id) => `%20${id}`, (id) => `${id};x=1`, () => '%EF%BC%91', () => '%zz']

const QUERIES = ['%zz', 'a=%zz', 'limit=%', '%=1', '=', '&&&', 'limit', 'limit=1&limit=2', 'status[]=x', 'a[b]=1', 'constructor=1', 'hasOwnProperty=1',
  '__proto__[x]=1', 'limit=%EF%BC%91', 'limit=+1', 'limit=1%00', 'limit=1;cursor=x', `limit=1&${'a=1&'.repeat(1500)}`]
const perParameter = (p: string) => [`${p}=`, `${p}&${p}`, `${p}=%zz`, `${p}[]=1`, `${p}[a]=1`, `${p}=x&${p}=y`, `${p}=1&${p}=1`, `${p}=%C0%AF`, `${p}=%ED%A0%80`,
  `${p}=${'9'.repeat(400)}`, `${p}=${encodeURIComponent(world.user.id.toUpperCase())}`, `${p}=${encodeURIComponent('{"a":{"b":[1,null]},"c":1e308}')}`,
  `${p}=${encodeURIComponent('{"":"\\u0000","d":"\\ud800","e":9007199254740993}')}`]

/** The answers any operation may give besides its own, and, off its own route, 404 and 405. */
const ANY_ROUTE = [404, 405, 406, 413, 414, 415]

const idFor = (op: Operation, name: string) => Object.entries(OWNED).find(([prefix]) => op.path.startsWith(prefix))?.[1]?.[name] ?? CATALOGUE[name] ?? world.user.id
const pathOf = (op: Operation, spell: (id: string) => string = (id) => id) => op.path.replace(/\{(\w+)\}/g, (_, name: string) => spell(idFor(op, name)))
// Each route as the key that may use it: the operator for tenants and the catalogue's changes, A otherwise.
const keyFor = (op: Operation) => (op.path.startsWith('/v1/tenants') || (op.path.startsWith('/v1/marketplace-services') && op.method !== 'GET' && !op.path.endsWith('/activation'))
  ? ctx.operatorKey : world.a.key)

/** Every property of a schema (three levels down, array items as /0), as paths of keys. */
function propertyPaths(schema: Schema | undefined, prefix: string[] = []): string[][] {
  if (!schema || prefix.length > 3) return []
  const branches = [...(schema.anyOf ?? []).flatMap((s) => propertyPaths(s, prefix))]
  const items = schema.items ? propertyPaths(schema.items, [...prefix, '0']) : []
  const own = Object.entries(schema.properties ?? {}).flatMap(([name, s]) => [[...prefix, name], ...propertyPaths(s, [...prefix, name])])
  return [...branches, ...items, ...own]
}

const HOLE = '~hole~'

/** The sample body as text with the value at `path` replaced by `valueText` (objects and arrays made on the way). */
function withValue(base: unknown, path: string[], valueText: string): string {
  const copy = structuredClone(base ?? {}) as Record<string, unknown>
  let node: Record<string, unknown> = copy
  for (const [i, key] of path.entries()) {
    if (i === path.length - 1) node[key] = HOLE
    else {
      if (typeof node[key] !== 'object' || node[key] === null) node[key] = /^\d+$/.test(path[i + 1]!) ? [] : {}
      node = node[key] as Record<string, unknown>
    }
  }
  return JSON.stringify(copy).replace(`"${HOLE}"`, () => valueText)
}

/** The requests of one operation: its body, headers, path and query string each made hostile in turn. */
function requests(op: Operation): [string, InjectOptions][] {
  const path = pathOf(op)
  const base = op.body ? sampleValid(op.body, { uuid: (name) => BY_FIELD[name] ?? world.user.id }) : undefined
  const json = { 'content-type': 'application/json' }
  const payload = base === undefined ? undefined : JSON.stringify(base)
  // The operation's own request with some headers changed: its sample body where it takes one.
  const withHeaders = (headers: Record<string, string | string[]>): InjectOptions => ({ url: path, headers: { ...(payload ? json : {}), ...headers }, ...(payload ? { payload } : {}) })
  const list: [string, InjectOptions][] = []
  if (op.body) {
    for (const at of [...propertyPaths(op.body), ['extra']]) {
      for (const value of VALUES) list.push([`/${at.join('/')} = ${value.slice(0, 30)}`, { url: path, headers: json, payload: withValue(base, at, value) }])
    }
    for (const name of Object.keys(op.body.properties ?? {})) list.push([`${name} twice`, { url: path, headers: json, payload: `${payload!.slice(0, -1)}${payload === '{}' ? '' : ','}"${name}":12345}` }])
  }
  for (const value of VALUES.slice(0, 14)) list.push([`a body of ${value.slice(0, 30)}`, { url: path, headers: json, payload: value }])
  for (const type of CONTENT_TYPES) list.push([`Content-Type ${type}`, { url: path, headers: { 'content-type': type }, payload: payload ?? '{}' }])
  for (const name of ['if-match', 'idempotency-key', 'authorization', 'accept', 'content-type', 'content-encoding', 'x-request-id']) {
    const value = name === 'authorization' ? `Bearer ${keyFor(op)}` : name === 'content-type' ? 'application/json' : '"1"'
    list.push([`${name} twice`, withHeaders({ [name]: [value, value] })])
  }
  for (const value of IF_MATCH) list.push([`If-Match ${value.slice(0, 20)}`, withHeaders({ 'if-match': value })])
  for (const value of IDEMPOTENCY_KEYS) list.push([`Idempotency-Key of ${value.length}: ${value.slice(0, 5)}`, withHeaders({ 'idempotency-key': value })])
  for (const value of AUTHORIZATIONS) list.push([`Authorization ${value.slice(0, 30)}`, withHeaders({ authorization: value })])
  if (op.path.includes('{')) for (const [i, spell] of ID_SPELLINGS.entries()) list.push([`id spelling ${i}: ${pathOf(op, spell)}`, { ...withHeaders({}), url: pathOf(op, spell) }])
  const names = op.parameters.filter((p) => p.in === 'query').map((p) => p.name)
  for (const query of [...QUERIES, ...names.flatMap(perParameter)]) list.push([`?${query.slice(0, 40)}`, { ...withHeaders({}), url: `${path}?${query}` }])
  return list
}

/** Why an answer breaks the contract, or undefined: on its own route, an answer must also match the document's schema for its status. */
function breach(op: Operation, status: number, contentType: string, body: string, ownRoute: boolean): string | undefined {
  if (status >= 500) return `server error ${status}: ${body.slice(0, 300)}`
  const mismatch = ownRoute ? responseMismatch(op, status, contentType, body, ANY_ROUTE) : undefined
  if (mismatch) return mismatch
  if (status < 400) return undefined
  if (!op.responses.includes(status) && !ANY_ROUTE.includes(status)) return `${status}, which ${op.name} does not document: ${body.slice(0, 200)}`
  if (!/^application\/problem\+json/.test(contentType)) return `${status} is ${contentType || 'without a content type'}: ${body.slice(0, 200)}`
  const problem = JSON.parse(body) as { status?: unknown; detail?: unknown }
  if (problem.status !== status || typeof problem.detail !== 'string') return `${status} is not a problem of that status: ${body.slice(0, 200)}`
  return undefined
}

// Deletions last: a user or template deleted early would leave later operations at 404 before their body is read.
const ordered = [...OPERATIONS.filter((op) => op.method !== 'DELETE'), ...OPERATIONS.filter((op) => op.method === 'DELETE')]
for (const op of ordered) {
  t.test(op.name, async (t) => {
    const breaches: string[] = []
    const list = requests(op)
    for (const [label, options] of list) {
      const headers = { authorization: `Bearer ${keyFor(op)}`, ...(options.headers as Record<string, string>) }
      const response = await ctx.app.inject({ method: op.method, ...options, headers })
      // An id spelled as `..` is a dot segment, which light-my-request resolves: the request reaches another route.
      const path = String(options.url).split('?')[0]!
      const problem = breach(op, response.statusCode, String(response.headers['content-type'] ?? ''), response.body, new URL(path, 'http://localhost').pathname === path)
      if (problem) breaches.push(`${label}: ${problem}`)
    }
    t.same(breaches, [], `${list.length} requests`)
  })
}
