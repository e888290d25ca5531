import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { encodeCursor, listScope } from '../../src/lib/pagination.js'
import type { Response } from '../helpers/app.js'
import { setupRuntime } from '../helpers/runtime.js'

// Tenant A names tenant B's records where A's own requests take ids: in bodies, in list filters, in
// cursors and headers, in an apiClaim. Each answer must read exactly as the answer for an id that
// exists nowhere (status, problem, headers): A never learns that B's id exists. The route-by-route
// matrix (matrix.test.ts) covers B's ids in paths; this file the ids that travel elsewhere.
const rt = await setupRuntime(t)
const a = { client: rt.api, id: rt.tenant.id }
const b = await rt.newTenant({ name: 'Bravo Immobilien' })

async function made(response: Promise<Response>, status = 201) {
  const r = await response
  if (r.statusCode !== status) throw new Error(`fixture: ${r.statusCode} ${r.body}`)
  return r.data
}

// B: a user, a property and an address, an active template with a task and a follow-up, a running
// process, and a catalogue service only B has activated, with a trigger on properties.
const bUser = await made(b.client.post('/v1/users', { name: 'Bruno Bravo', email: 'bruno@bravo.example' }))
const bProperty = await made(b.client.post('/v1/properties', { maintainerUserId: bUser.id, fields: { price: 1 } }))
const bAddress = await made(b.client.post('/v1/addresses', { maintainerUserId: bUser.id, fields: { email: 'owner@bravo.example' } }))
const bTemplate = await made(b.client.post('/v1/process-templates', { name: 'Bravo process', controllerUserId: bUser.id }))
const bStep = await made(b.client.post(`/v1/process-templates/${bTemplate.id}/steps`, { kind: 'task', name: 'Bravo task', responsibility: { user: bUser.id } }))
await made(b.client.patch(`/v1/process-templates/${bTemplate.id}`, { active: true }), 200)
const bInstance = await made(b.client.post('/v1/process-instances', { templateId: bTemplate.id, responsibleUserId: bUser.id, propertyId: bProperty.id, addressId: bAddress.id }))
const bOnly = await made(rt.operator.post('/v1/marketplace-services', { name: 'Bravo-only service', provider: 'OnlyB', webhookUrl: `${rt.provider.url}/hooks/b-only` }))
const nobodys = await made(rt.operator.post('/v1/marketplace-services', { name: 'Nobody\'s service', provider: 'OnlyB', webhookUrl: `${rt.provider.url}/hooks/nobody` }))
await made(rt.operator.post(`/v1/marketplace-services/${bOnly.id}/triggers`, { module: 'property', events: ['create', 'update'] }))
await made(rt.operator.post(`/v1/marketplace-services/${nobodys.id}/triggers`, { module: 'property', events: ['create', 'update'] }))
await made(b.client.put(`/v1/marketplace-services/${bOnly.id}/activation`), 200)

// A: an inactive template with two steps, for the bodies that edit one.
const aTemplate = await made(a.client.post('/v1/process-templates', { name: 'Alpha draft', controllerUserId: rt.controller.id }))
const aSteps = [
  await made(a.client.post(`/v1/process-templates/${aTemplate.id}/steps`, { kind: 'task', name: 'Alpha one' })),
  await made(a.client.post(`/v1/process-templates/${aTemplate.id}/steps`, { kind: 'task', name: 'Alpha two' }))
]
const aActive = await rt.template([{ kind: 'task', name: 'Alpha task' }])

let requests = 0
const HEADERS = ['etag', 'location', 'idempotent-replayed', 'allow', 'content-type', 'cache-control', 'retry-after']

/** An answer with the id it was asked about (in either case) written as <id>, and what differs per request (its id, its time) left out. */
function shape(r: Response, id: string, name?: string) {
  const body = [[id, '<id>'], [id.toLowerCase(), '<id>'], [name ?? id, '<name>']].reduce((text, [from, to]) => text.split(from!).join(to), r.body)
  let parsed: unknown = body
  try {
    const { requestId: _requestId, ...rest } = JSON.parse(body) as Record<string, unknown>
    parsed = rest
  } catch { /* not JSON: compared as text */ }
  return { status: r.statusCode, headers: Object.fromEntries(HEADERS.map((h) => [h, r.headers[h]])), body: parsed }
}

/**
 * Sends the request once naming B's id and once an id that exists nowhere: the answers must be alike.
 * Returns B's answer for further checks.
 */
async function alike(t: Test, what: string, foreign: string, send: (id: string) => Promise<Response>): Promise<Response> {
  const unknown = foreign === foreign.toUpperCase() ? randomUUID().toUpperCase() : randomUUID()
  const theirs = await send(foreign)
  const nobody = await send(unknown)
  requests += 2
  t.same(shape(theirs, foreign), shape(nobody, unknown), `${what}: B's id answers as an unknown id (${theirs.statusCode})`)
  t.ok(theirs.statusCode < 500, `${what}: no server error ${theirs.statusCode < 500 ? '' : theirs.body}`)
  t.notMatch(theirs.body, /Bruno|Bravo|bravo\.example/, `${what}: nothing of B's in the answer`)
  return theirs
}

const refused = (t: Test, r: Response, what: string) => t.ok(r.statusCode >= 400 && r.statusCode < 500, `${what}: refused (${r.statusCode})`)

t.test('B\'s ids in the bodies of A\'s requests answer as ids that exist nowhere', async (t) => {
  const steps = `/v1/process-templates/${aTemplate.id}/steps`
  const cases: [string, string, (id: string) => Promise<Response>][] = [
    ['a property\'s maintainer', bUser.id, (id) => a.client.post('/v1/properties', { maintainerUserId: id, fields: {} })],
    ['an address\'s maintainer', bUser.id, (id) => a.client.post('/v1/addresses', { maintainerUserId: id, fields: {} })],
    ['a property\'s new maintainer', bUser.id, (id) => a.client.patch(`/v1/properties/${rt.propertyId}`, { maintainerUserId: id })],
    ['a template\'s controller', bUser.id, (id) => a.client.post('/v1/process-templates', { name: 'x', controllerUserId: id })],
    ['a template\'s new controller', bUser.id, (id) => a.client.patch(`/v1/process-templates/${aTemplate.id}`, { controllerUserId: id })],
    ['an autostart\'s responsible user', bUser.id, (id) => a.client.patch(`/v1/process-templates/${aTemplate.id}`, {
      autostart: { on: 'recordCreated', record: 'property', responsible: { user: id } }
    })],
    ['a step\'s responsible user', bUser.id, (id) => a.client.post(steps, { kind: 'task', name: 'x', responsibility: { user: id } })],
    ['a step\'s new responsible user', bUser.id, (id) => a.client.patch(`${steps}/${aSteps[0].id}`, { responsibility: { user: id } })],
    ['a follow-up\'s template', bTemplate.id, (id) => a.client.post(steps, { kind: 'followUpProcess', name: 'x', followUp: { templateId: id } })],
    ['a step turned follow-up', bTemplate.id, (id) => a.client.patch(`${steps}/${aSteps[0].id}`, { kind: 'followUpProcess', followUp: { templateId: id } })],
    ['a step order', bStep.id, (id) => a.client.put(`${steps}/order`, { stepIds: [aSteps[1].id, id] })],
    ['a step order naming B\'s step in place of A\'s', bStep.id, (id) => a.client.put(`${steps}/order`, { stepIds: [aSteps[1].id, aSteps[0].id, id] })],
    ['a start\'s template', bTemplate.id, (id) => a.client.post('/v1/process-instances', { templateId: id, responsibleUserId: rt.worker.id })],
    ['a start\'s responsible user', bUser.id, (id) => a.client.post('/v1/process-instances', { templateId: aActive, responsibleUserId: id })],
    ['a start\'s property', bProperty.id, (id) => a.client.post('/v1/process-instances', { templateId: aActive, responsibleUserId: rt.worker.id, propertyId: id })],
    ['a start\'s address', bAddress.id, (id) => a.client.post('/v1/process-instances', { templateId: aActive, responsibleUserId: rt.worker.id, addressId: id })],
    ['a copy\'s source', bTemplate.id, (id) => a.client.post(`/v1/process-templates/${id}/copy`, {})]
  ]
  for (const [what, foreign, send] of cases) {
    refused(t, await alike(t, what, foreign, send), what)
    // An id in upper case names the same record (README): B's, so it answers as an unknown id too.
    refused(t, await alike(t, `${what} (upper case)`, foreign.toUpperCase(), (id) => send(id)), `${what} (upper case)`)
  }

  // An advance naming B's current step as the one it means.
  const aRunning = await rt.start(aActive)
  const advance = await alike(t, 'an advance\'s step', bInstance.steps[0].id,
    (id) => a.client.post(`/v1/process-instances/${aRunning.id}/advance`, { outcome: 'done', stepId: id }))
  refused(t, advance, 'an advance naming B\'s step')
  t.equal((await rt.instance(aRunning.id)).steps[0].state, 'due', 'A\'s step is untouched')
  t.equal((await b.client.get(`/v1/process-instances/${bInstance.id}`)).data.steps[0].state, 'due', 'B\'s step is untouched')
  await a.client.post(`/v1/process-instances/${aRunning.id}/cancel`, {})

  // A catalogue service is everyone's to see, but whether B activated it is B's: A's step calling a
  // service only B activated answers as for a service nobody activated.
  const hook = (serviceId: string) => ({ kind: 'webhook', name: 'x', serviceId })
  const onlyB = await a.client.post(steps, hook(bOnly.id))
  const none = await a.client.post(steps, hook(nobodys.id))
  requests += 2
  t.same(shape(onlyB, bOnly.id, bOnly.name), shape(none, nobodys.id, nobodys.name), 'a step calling a service only B activated: as one nobody activated')
  refused(t, onlyB, 'a step calling a service A has not activated')
})

t.test('B\'s ids in A\'s list filters find nothing, as ids that exist nowhere', async (t) => {
  const filters: [string, string][] = [
    ['/v1/properties?maintainerUserId=', bUser.id],
    ['/v1/addresses?maintainerUserId=', bUser.id],
    ['/v1/process-instances?assigneeUserId=', bUser.id],
    ['/v1/process-instances?templateId=', bTemplate.id],
    ['/v1/process-instances?propertyId=', bProperty.id],
    ['/v1/process-instances?addressId=', bAddress.id],
    ['/v1/process-instances?parentId=', bInstance.id],
    ['/v1/deliveries?instanceId=', bInstance.id],
    ['/v1/deliveries?stepId=', bInstance.steps[0].id],
    ['/v1/deliveries?serviceId=', bOnly.id]
  ]
  for (const [url, foreign] of filters) {
    for (const id of [foreign, foreign.toUpperCase()]) {
      const r = await alike(t, url, id, (x) => a.client.get(`${url}${x}`))
      t.equal(r.statusCode, 200, `${url}: a list`)
      t.same(r.data?.items, [], `${url}: empty`)
    }
  }
  // B's user's e-mail, against an address nobody has (the unknown id standing in for the name).
  const byEmail = await alike(t, 'users by B\'s e-mail', 'bruno', (name) => a.client.get(`/v1/users?email=${name}%40bravo.example`))
  t.same(byEmail.data.items, [])
  t.same((await a.client.get('/v1/users?q=Bruno')).data.items, [], 'users by B\'s name: none')
  t.same((await a.client.get('/v1/process-templates?q=Bravo')).data.items, [], 'templates by B\'s name: none')
  const activated = (await a.client.get('/v1/marketplace-services?activated=true&limit=200')).data.items.map((s: { id: string }) => s.id)
  t.notOk(activated.includes(bOnly.id), 'B\'s activation is not A\'s')
  t.equal((await a.client.get(`/v1/marketplace-services/${bOnly.id}`)).data.activated, false, 'the service reads not activated for A')
  const activation = await a.client.get(`/v1/marketplace-services/${bOnly.id}/activation`)
  const noActivation = await a.client.get(`/v1/marketplace-services/${nobodys.id}/activation`)
  t.same(shape(activation, bOnly.id, bOnly.name), shape(noActivation, nobodys.id, nobodys.name), 'A\'s activation of the service B activated reads as of one nobody activated')
  requests += 14
})

t.test('a cursor B was given pages only through A\'s own rows', async (t) => {
  for (let i = 0; i < 3; i++) {
    await made(b.client.post('/v1/users', { name: `Bravo user ${i}`, email: `b${i}@bravo.example` }))
    await made(a.client.post('/v1/users', { name: `Alpha user ${i}`, email: `a${i}@alpha.example` }))
  }
  const ours = new Set<string>()
  for (const list of ['/v1/users', '/v1/properties', '/v1/addresses', '/v1/process-templates', '/v1/process-instances', '/v1/deliveries']) {
    for (const item of (await a.client.get(`${list}?limit=200`)).data.items) ours.add(item.id)
    const page = await b.client.get(`${list}?limit=1`)
    requests += 2
    t.equal(page.statusCode, 200, list)
    if (!page.data.nextCursor) continue
    // A cursor names the caller whose list it is: B's is refused, and tells nothing of B.
    const replayed = await a.client.get(`${list}?limit=200&cursor=${page.data.nextCursor}`)
    t.equal(replayed.statusCode, 400, `${list}: B's cursor is not one of A's lists`)
    t.same(replayed.data.errors, [{ pointer: '/querystring/cursor', detail: 'cursor does not belong to this list' }])
    t.notMatch(replayed.body, /Bravo|bravo/)
    // One of A's list that names B's row is read as a place in A's list, as an id that exists nowhere.
    const placed = await a.client.get(`${list}?limit=200&cursor=${encodeCursor(listScope(list, {}, a.id), page.data.items[0].id)}`)
    requests += 2
    t.equal(placed.statusCode, 200, `${list}: B's row in A's cursor is read as a place in A's list`)
    const strangers = placed.data.items.filter((item: { id: string }) => !ours.has(item.id))
    t.same(strangers, [], `${list}: B's row in A's cursor shows none of B's rows`)
  }
  // A nested list's cursor names its parent: B's template's steps cursor is not one for A's template.
  await made(b.client.post(`/v1/process-templates/${bTemplate.id}/steps`, { kind: 'task', name: 'Bravo second' }))
  const bSteps = await b.client.get(`/v1/process-templates/${bTemplate.id}/steps?limit=1`)
  const replayed = await a.client.get(`/v1/process-templates/${aTemplate.id}/steps?cursor=${bSteps.data.nextCursor}`)
  t.equal(replayed.statusCode, 400, 'B\'s steps cursor on A\'s template: refused as another list\'s')
  t.notMatch(replayed.body, /Bravo/)
  requests += 2
})

t.test('a tenant\'s Idempotency-Key never answers with another tenant\'s record', async (t) => {
  for (const path of ['/v1/properties', '/v1/addresses']) {
    const key = { 'idempotency-key': `shared-${randomUUID()}` }
    const theirs = await made(b.client.post(path, { fields: { secret: 'Bravo' } }, key))
    const ours = await a.client.post(path, { fields: { secret: 'Bravo' } }, key)
    requests += 2
    t.equal(ours.statusCode, 201, `${path}: A's first use of the key creates A's record`)
    t.not(ours.data.id, theirs.id)
    t.notOk(ours.headers['idempotent-replayed'])
  }
})

t.test('an If-Match that B\'s record would satisfy is judged against A\'s version only', async (t) => {
  const current = (await a.client.get(`/v1/properties/${rt.propertyId}`)).data.version as number
  const bumped = await b.client.patch(`/v1/properties/${bProperty.id}`, { fields: { price: 2 } })
  t.equal(bumped.statusCode, 200)
  const stale = await a.client.patch(`/v1/properties/${rt.propertyId}`, { fields: { note: 'x' } }, { 'if-match': bumped.headers.etag as string })
  requests += 3
  if (bumped.data.version === current) t.equal(stale.statusCode, 200, 'the same number is A\'s current version too')
  else t.equal(stale.statusCode, 412, 'B\'s version is no version of A\'s record')
})

t.test('an apiClaim reaches the records its call named, of its tenant, and answers alike for all others', async (t) => {
  // A's process calls the provider for A's property; B's call for B's property.
  const template = await rt.template([{ kind: 'webhook', name: 'Value it', refersTo: { property: true } }])
  const started = await rt.start(template)
  await rt.scheduler.runOnce()
  const call = rt.provider.calls.find((c) => c.query.processId === started.id)
  t.ok(call, 'A\'s call went out')
  const claim = rt.as(call!.query.apiClaim!)
  t.equal((await claim.get(`/v1/properties/${rt.propertyId}`)).statusCode, 200, 'the named property')

  const other = await made(a.client.post('/v1/properties', { fields: { price: 3 } }))
  for (const [what, id] of [['B\'s property', bProperty.id], ['A\'s other property', other.id]] as const) {
    const read = await alike(t, `a claim reading ${what}`, id, (x) => claim.get(`/v1/properties/${x}`))
    refused(t, read, `a claim reading ${what}`)
    const write = await alike(t, `a claim writing ${what}`, id, (x) => claim.patch(`/v1/properties/${x}`, { fields: { marketValue: 1 } }))
    refused(t, write, `a claim writing ${what}`)
  }
  t.same((await b.client.get(`/v1/properties/${bProperty.id}`)).data.fields.marketValue, undefined, 'B\'s property unchanged')
  t.same((await a.client.get(`/v1/properties/${other.id}`)).data.fields.marketValue, undefined, 'A\'s other property unchanged')
  const address = await alike(t, 'a claim reading B\'s address', bAddress.id, (x) => claim.get(`/v1/addresses/${x}`))
  refused(t, address, 'a claim reading an address its call did not name')
})

t.test('a trigger of a service only B activated fires for B\'s records only, and A never sees its calls', async (t) => {
  await rt.scheduler.runOnce()
  const callsBefore = rt.provider.calls.length
  await made(a.client.patch(`/v1/properties/${rt.propertyId}`, { fields: { price: 777001 } }), 200)
  const aCreated = await made(a.client.post('/v1/properties', { fields: { price: 777002 } }))
  await made(b.client.patch(`/v1/properties/${bProperty.id}`, { fields: { price: 777003 } }), 200)
  const bCreated = await made(b.client.post('/v1/properties', { fields: { price: 777004 } }))
  const bRecords = [bProperty.id, bCreated.id]

  const aDeliveries = (await a.client.get('/v1/deliveries?limit=200')).data.items as { id: string; serviceId: string | null; propertyId: string | null }[]
  t.same(aDeliveries.filter((d) => d.serviceId === bOnly.id || d.serviceId === nobodys.id), [], 'A has no delivery of a service it did not activate')
  t.same(aDeliveries.filter((d) => bRecords.includes(d.propertyId ?? '')), [], 'nor one about B\'s records')
  const bDeliveries = ((await b.client.get(`/v1/deliveries?serviceId=${bOnly.id}&status=pending&limit=200`)).data.items as { id: string; propertyId: string }[])
  t.same(bDeliveries.map((d) => d.propertyId).sort(), [...bRecords].sort(), 'B\'s create and change each queued a call about B\'s record')
  for (const d of bDeliveries) {
    t.equal((await alike(t, 'B\'s delivery read by A', d.id, (id) => a.client.get(`/v1/deliveries/${id}`))).statusCode, 404)
    t.equal((await alike(t, 'B\'s delivery replayed by A', d.id, (id) => a.client.post(`/v1/deliveries/${id}/replay`))).statusCode, 404)
  }
  const recover = (id: string) => a.client.post(`/v1/marketplace-services/${id}/recover`, { since: '2000-01-01T00:00:00Z', dryRun: true })
  t.same(shape(await recover(bOnly.id), bOnly.id, bOnly.name), shape(await recover(nobodys.id), nobodys.id, nobodys.name),
    'recovering a service only B activated: as one nobody activated')

  await rt.scheduler.runOnce()
  const calls = rt.provider.calls.slice(callsBefore).filter((c) => c.url.includes('/hooks/b-only') || c.url.includes('/hooks/nobody'))
  t.same(calls.map((c) => c.query.estateId).sort(), [...bRecords].sort(), 'one call per B\'s change, none for A\'s')
  for (const call of calls) {
    t.ok(call.url.includes('/hooks/b-only'), 'no call of the service nobody activated')
    t.match(call.query, { customerWebId: b.webId, customerName: 'Bravo Immobilien' }, 'a call for B')
    t.notMatch(call.url, new RegExp(`${rt.tenant.webId}|${rt.propertyId}|${aCreated.id}|Muster`), 'nothing of A\'s in it')
    const claim = rt.as(call.query.apiClaim!)
    refused(t, await alike(t, 'B\'s trigger claim reading A\'s property', rt.propertyId, (id) => claim.get(`/v1/properties/${id}`)), 'B\'s trigger claim on A\'s property')
  }
  requests += 10
})

t.test('a trigger of a service both tenants activated calls each about its own record, as itself', async (t) => {
  await rt.scheduler.runOnce()
  await made(rt.operator.post(`/v1/marketplace-services/${rt.serviceId}/triggers`, { module: 'property', events: ['update'], fields: ['shared'] }))
  await made(b.client.put(`/v1/marketplace-services/${rt.serviceId}/activation`), 200)
  const callsBefore = rt.provider.calls.length
  await made(a.client.patch(`/v1/properties/${rt.propertyId}`, { fields: { shared: 'alpha' } }), 200)
  await made(b.client.patch(`/v1/properties/${bProperty.id}`, { fields: { shared: 'bravo' } }), 200)
  const aList = (await a.client.get(`/v1/deliveries?serviceId=${rt.serviceId}&status=pending`)).data.items as { propertyId: string }[]
  const bList = (await b.client.get(`/v1/deliveries?serviceId=${rt.serviceId}&status=pending`)).data.items as { propertyId: string }[]
  t.same(aList.map((d) => d.propertyId), [rt.propertyId], 'A lists its call only')
  t.same(bList.map((d) => d.propertyId), [bProperty.id], 'B lists its call only')
  await rt.scheduler.runOnce()
  const calls = rt.provider.calls.slice(callsBefore).filter((c) => c.query.event === 'update')
  const byTenant = Object.fromEntries(calls.map((c) => [c.query.customerWebId, c.query.estateId]))
  t.same(byTenant, { [rt.tenant.webId]: rt.propertyId, [b.webId]: bProperty.id }, 'each tenant\'s call names its own record')
  for (const call of calls) {
    const own = call.query.estateId!
    const foreign = own === rt.propertyId ? bProperty.id : rt.propertyId
    const claim = rt.as(call.query.apiClaim!)
    t.equal((await claim.get(`/v1/properties/${own}`)).data.fields.shared, own === rt.propertyId ? 'alpha' : 'bravo', 'the claim reads its own record')
    refused(t, await alike(t, 'a claim reading the other tenant\'s record', foreign, (id) => claim.get(`/v1/properties/${id}`)), 'the other tenant\'s record')
  }
  requests += 6
})

t.test('conditional headers on B\'s records answer as on ids that exist nowhere', async (t) => {
  const bSecond = (await b.client.get(`/v1/process-templates/${bTemplate.id}/steps`)).data.items[0].id as string
  const records: [string, string][] = [
    ['/v1/properties/', bProperty.id], ['/v1/addresses/', bAddress.id], ['/v1/process-templates/', bTemplate.id],
    [`/v1/process-templates/${bTemplate.id}/steps/`, bSecond], ['/v1/process-instances/', bInstance.id], ['/v1/users/', bUser.id]
  ]
  for (const [prefix, foreign] of records) {
    for (const tag of ['*', '"1"', '"2"', 'W/"1"']) {
      for (const method of ['GET', 'HEAD'] as const) {
        const send = (id: string) => rt.app.inject({ method, url: `${prefix}${id}`, headers: { authorization: `Bearer ${rt.tenant.key}`, 'if-none-match': tag } })
          .then((r) => Object.assign(r, { data: undefined }) as Response)
        t.equal((await alike(t, `${method} ${prefix}{B's} If-None-Match ${tag}`, foreign, send)).statusCode, 404)
      }
      const update = prefix.startsWith('/v1/users') ? { name: 'x' } : prefix.includes('instances') ? undefined : prefix.includes('templates') ? { name: 'x' } : { fields: { x: 1 } }
      if (update) {
        t.equal((await alike(t, `PATCH ${prefix}{B's} If-Match ${tag}`, foreign, (id) => a.client.patch(`${prefix}${id}`, update, { 'if-match': tag }))).statusCode, 404)
        t.equal((await alike(t, `DELETE ${prefix}{B's} If-Match ${tag}`, foreign, (id) => a.client.delete(`${prefix}${id}`, { 'if-match': tag }))).statusCode, 404)
      }
    }
  }
  t.equal((await alike(t, 'PUT steps/order of B\'s template with If-Match', bTemplate.id,
    (id) => a.client.put(`/v1/process-templates/${id}/steps/order`, { stepIds: [bSecond] }, { 'if-match': '*' }))).statusCode, 404)
  t.equal((await b.client.get(`/v1/properties/${bProperty.id}`)).statusCode, 200, 'B\'s records are all still there')
  t.equal((await b.client.get(`/v1/process-templates/${bTemplate.id}`)).statusCode, 200)
})

t.test('the operator reaches a tenant\'s keys under that tenant only', async (t) => {
  const bKeys = (await rt.operator.get(`/v1/tenants/${b.id}/api-keys`)).data.items as { id: string }[]
  for (const { id: keyId } of bKeys) {
    t.equal((await alike(t, 'B\'s key under A', keyId, (id) => rt.operator.get(`/v1/tenants/${a.id}/api-keys/${id}`))).statusCode, 404)
    t.equal((await alike(t, 'B\'s key revoked under A', keyId, (id) => rt.operator.delete(`/v1/tenants/${a.id}/api-keys/${id}`))).statusCode, 404)
  }
  t.equal((await b.client.get('/v1/users')).statusCode, 200, 'B\'s key still works')
})

t.test('a recovery counts the calling tenant\'s failed calls only', async (t) => {
  const failing = await made(rt.operator.post('/v1/marketplace-services', { name: 'Failing', provider: 'Down', webhookUrl: `${rt.provider.url}/hooks/down` }))
  await made(rt.operator.post(`/v1/marketplace-services/${failing.id}/triggers`, { module: 'property', events: ['update'], fields: ['down'] }))
  await made(b.client.put(`/v1/marketplace-services/${failing.id}/activation`), 200)
  await made(a.client.put(`/v1/marketplace-services/${failing.id}/activation`), 200)
  rt.provider.always((call) => ({ status: call.url.includes('/hooks/down') ? 400 : 200 }))
  try {
    await made(b.client.patch(`/v1/properties/${bProperty.id}`, { fields: { down: 1 } }), 200)
    await rt.scheduler.runOnce()
  } finally {
    rt.provider.always({ status: 200, body: 'ok' })
  }
  t.equal((await b.client.get(`/v1/deliveries?serviceId=${failing.id}&status=failed`)).data.items.length, 1, 'B\'s call failed')
  const body = { since: '2000-01-01T00:00:00Z', dryRun: true }
  const ours = await a.client.post(`/v1/marketplace-services/${failing.id}/recover`, body)
  const theirs = await b.client.post(`/v1/marketplace-services/${failing.id}/recover`, body)
  t.equal(ours.statusCode, 200, ours.body)
  t.equal(ours.data.count, 0, 'A counts none of B\'s failed calls')
  t.equal(theirs.data.count, 1, 'B counts its own')
  const queued = await a.client.post(`/v1/marketplace-services/${failing.id}/recover`, { since: '2000-01-01T00:00:00Z' })
  t.equal(queued.statusCode, 200, queued.body)
  t.equal((await b.client.get(`/v1/deliveries?serviceId=${failing.id}&status=failed`)).data.items.length, 1, 'A\'s recovery queued none of B\'s calls')
  requests += 6
})

t.test('counts', async (t) => {
  t.comment(`cross-tenant references: ${requests} requests`)
  t.ok(requests > 80)
})
