import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { setupApp, type Client, type Response } from '../helpers/app.js'
import { fillPath, OPERATIONS, sampleValid, type Operation } from '../helpers/openapi.js'
import { buildWorld, ownedIds } from '../helpers/world.js'

// Every operation of the OpenAPI document, called by every kind of caller: who may call it, and that
// another tenant learns nothing of tenant A's records. Derived from the document, so a new route is
// covered the day it is added.
// Hundreds of failed authentications from one address: the failure limit (tested on its own) is off here.
const ctx = await setupApp(t, { AUTH_FAILURE_LIMIT: '0' })
const { operator, anonymous } = ctx

type Audience = 'public' | 'operator' | 'any' | 'tenant'

/** Who may call an operation: the policy the routes declare, stated here once more to be checked. */
function audienceOf(op: Operation): Audience {
  if (op.path.startsWith('/health/')) return 'public'
  if (op.path === '/metrics' || op.path.startsWith('/v1/tenants')) return 'operator'
  const catalogue = /^\/v1\/marketplace-services(\/\{id\}(\/(parameters|triggers)(\/\{\w+\})?)?)?$/.test(op.path)
  if (catalogue) return op.method === 'GET' ? 'any' : 'operator'
  return 'tenant'
}

const world = await buildWorld(ctx)
const { a, b, user, property, address, service, parameter, trigger, template, templateStep, instance, hidden, claim } = world

/** A's records, by the path they live under; their ids must never reach another tenant. */
const OWNED = ownedIds(world)
const CATALOGUE = { id: service.id, parameterId: parameter.id, triggerId: trigger.id }
const PRIVATE = [...new Set([...Object.values(OWNED).flatMap((ids) => Object.values(ids)), instance.steps[1].id])]
/** A's ids by the name of a body property, so that another tenant's bodies point at A's records. */
const BY_FIELD: Record<string, string> = {
  maintainerUserId: user.id, controllerUserId: user.id, responsibleUserId: user.id, user: user.id,
  templateId: template.id, propertyId: property.id, addressId: address.id, serviceId: service.id, stepId: templateStep.id, stepIds: templateStep.id
}

const idsUnder = (op: Operation) => Object.entries(OWNED).find(([prefix]) => op.path.startsWith(prefix))?.[1]
const pathOfA = (op: Operation) => fillPath(op, (name) => idsUnder(op)?.[name] ?? (CATALOGUE as Record<string, string>)[name] ?? randomUUID())
const pathOfNobody = (op: Operation) => fillPath(op, () => randomUUID())
const bodyOf = (op: Operation, ids: (name: string) => string) => (op.body ? sampleValid(op.body, { uuid: ids }) : undefined)
const bodyOfA = (op: Operation) => bodyOf(op, (name) => BY_FIELD[name] ?? randomUUID())
const bodyOfNobody = (op: Operation) => bodyOf(op, () => randomUUID())

let requests = 0
function send(client: Client, op: Operation, url: string, body: unknown): Promise<Response> {
  requests += 1
  const method = op.method.toLowerCase() as 'get' | 'post' | 'put' | 'patch' | 'delete'
  if (method === 'get' || method === 'delete') return client[method](url)
  return client[method](url, body ?? {})
}

const noServerError = (t: Test, r: Response, what: string) => t.ok(r.statusCode < 500, `${what}: ${r.statusCode} ${r.statusCode >= 500 ? r.body : ''}`)
/** The document lists the status the operation answered: a generated client knows every answer it can get. */
const documented = (t: Test, op: Operation, r: Response) => t.ok(op.responses.includes(r.statusCode), `${op.name} documents its ${r.statusCode}`)

t.test('a request without a valid key is 401 everywhere but health', async (t) => {
  for (const op of OPERATIONS) {
    for (const [who, client] of [['no key', anonymous], ['a made-up key', ctx.as('btk_made-up')], ['a revoked key', ctx.as(world.revokedKey)], ['a made-up apiClaim', ctx.as('bcl_e30.x')]] as const) {
      const r = await send(client, op, pathOfA(op), bodyOfA(op))
      if (audienceOf(op) === 'public') noServerError(t, r, `${op.name} with ${who}`)
      else t.equal(r.statusCode, 401, `${op.name} with ${who}`)
      documented(t, op, r)
    }
  }
})

t.test('the operator and tenants reach exactly the routes of their audience', async (t) => {
  for (const op of OPERATIONS) {
    const audience = audienceOf(op)
    if (audience === 'public') continue
    const asOperator = await send(operator, op, pathOfNobody(op), bodyOfNobody(op))
    const asTenant = await send(a.client, op, pathOfNobody(op), bodyOfNobody(op))
    noServerError(t, asOperator, `${op.name} as the operator`)
    noServerError(t, asTenant, `${op.name} as a tenant`)
    documented(t, op, asOperator)
    documented(t, op, asTenant)
    t.equal(asOperator.statusCode === 403, audience === 'tenant', `${op.name} as the operator: ${asOperator.statusCode} (${audience})`)
    t.equal(asTenant.statusCode === 403, audience === 'operator', `${op.name} as a tenant: ${asTenant.statusCode} (${audience})`)
  }
})

t.test('another tenant gets 404 for A\'s records on every route, and never an id of A it did not send', async (t) => {
  for (const op of OPERATIONS) {
    const url = pathOfA(op)
    const body = bodyOfA(op)
    const r = await send(b.client, op, url, body)
    noServerError(t, r, `${op.name} as tenant B`)
    documented(t, op, r)
    const sent = JSON.stringify([url, body])
    const leaked = PRIVATE.filter((id) => r.body.includes(id) && !sent.includes(id))
    t.same(leaked, [], `${op.name} as tenant B: no id of A's in the answer`)
    const audience = audienceOf(op)
    if (audience === 'operator') t.equal(r.statusCode, 403, `${op.name} as tenant B`)
    else if (audience === 'tenant' && /\{\w+\}/.test(op.path) && idsUnder(op)) {
      // Indistinguishable from an id that does not exist (a body naming A's user fails first, alike).
      const unknown = await send(b.client, op, pathOfNobody(op), body)
      t.equal(r.statusCode, unknown.statusCode, `${op.name} on A's record as tenant B: ${r.statusCode}, as for an unknown id`)
      if (!PRIVATE.some((id) => JSON.stringify(body ?? null).includes(id))) t.equal(r.statusCode, 404, `${op.name} on A's record as tenant B`)
    } else if (audience === 'tenant' && PRIVATE.some((id) => sent.includes(id))) t.ok(r.statusCode >= 400, `${op.name} naming A's records as tenant B: ${r.statusCode}`)
  }
})

t.test('an apiClaim reads and updates the record its call names, and nothing else', async (t) => {
  const provider = ctx.as(claim)
  for (const op of OPERATIONS) {
    const named = op.path === '/v1/properties/{id}' && (op.method === 'GET' || op.method === 'PATCH')
    const url = named ? `/v1/properties/${property.id}` : pathOfA(op)
    const r = await send(provider, op, url, op.method === 'PATCH' && named ? { fields: { marketValue: 2 } } : bodyOfA(op))
    if (audienceOf(op) === 'public') noServerError(t, r, `${op.name} with an apiClaim`)
    else t.equal(r.statusCode, named ? 200 : 403, `${op.name} with an apiClaim: ${r.statusCode}`)
    documented(t, op, r)
  }
})

t.test('a catalogue service another tenant cannot see answers as an unknown id on every route', async (t) => {
  for (const op of OPERATIONS.filter((o) => o.path.startsWith('/v1/marketplace-services/{id}'))) {
    const url = (id: string) => fillPath(op, (name) => (name === 'id' ? id : randomUUID()))
    const body = bodyOfNobody(op)
    const seen = await send(b.client, op, url(hidden.id), body)
    const unknown = await send(b.client, op, url(randomUUID()), body)
    t.equal(seen.statusCode, unknown.statusCode, `${op.name}: ${seen.statusCode} for the hidden service, ${unknown.statusCode} for an unknown id`)
    t.notMatch(seen.body, /Hidden|Nobody/, `${op.name}: nothing about the hidden service`)
  }
})

t.test('counts', async (t) => {
  t.comment(`authorization matrix: ${requests} requests over ${OPERATIONS.length} operations`)
  t.ok(requests > OPERATIONS.length * 8)
})

// Make sure the fixtures really are A's and reachable by A (a broken fixture would make 404s vacuous).
t.test('tenant A reaches each of its records', async (t) => {
  for (const path of ['/v1/users/', '/v1/properties/', '/v1/addresses/', '/v1/process-templates/', '/v1/process-instances/', '/v1/deliveries/']) {
    t.equal((await a.client.get(`${path}${OWNED[path]!.id}`)).statusCode, 200, path)
  }
  t.equal((await a.client.get(`/v1/process-templates/${template.id}/steps/${templateStep.id}`)).statusCode, 200)
})
