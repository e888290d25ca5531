import { randomBytes } from 'node:crypto'
import t from 'tap'
import { setupApp } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { createTemplate, valuationService } from './fixtures.js'

const SECRET = `whsec_${randomBytes(32).toString('base64')}`
const SECRETS_KEY = randomBytes(32).toString('base64')
const TARGET = { url: 'https://crm.muster.example/hooks/baton?source=baton', secret: SECRET, delivery: 'json' }

t.test('a webhook step with a free target: created, read, listed, updated, copied; its secret is never shown', async (t) => {
  const ctx = await setupApp(t, { BATON_SECRETS_KEY: SECRETS_KEY })
  const tenant = await ctx.newTenant()
  const { client } = tenant
  const id = await createTemplate(client)
  const steps = `/v1/process-templates/${id}/steps`
  const bodies: string[] = []
  const seen = <T extends { body: string }>(response: T) => {
    bodies.push(response.body)
    return response
  }

  const created = seen(await client.post(steps, {
    kind: 'webhook', name: 'Tell our CRM', refersTo: { property: true }, target: TARGET, parameters: { list: 'buyers', priority: 2, urgent: true }
  }))
  t.equal(created.statusCode, 201, created.body)
  t.match(created.data, {
    kind: 'webhook', serviceId: null, target: { url: TARGET.url, delivery: 'json' }, parameters: { list: 'buyers', priority: 2, urgent: true }, version: 1
  })
  t.same(Object.keys(created.data.target).sort(), ['delivery', 'url'], 'the target shows where it calls, not what it signs with')
  const stepId = created.data.id

  const queryByDefault = seen(await client.post(steps, { kind: 'webhook', name: 'Ping', target: { url: 'https://crm.muster.example/ping', secret: SECRET } }))
  t.equal(queryByDefault.statusCode, 201, queryByDefault.body)
  t.same(queryByDefault.data.target, { url: 'https://crm.muster.example/ping', delivery: 'query' }, 'query delivery by default')

  t.same(seen(await client.get(`${steps}/${stepId}`)).data.target, { url: TARGET.url, delivery: 'json' })
  t.same(seen(await client.get(steps)).data.items.map((s: { target: unknown }) => s.target),
    [{ url: TARGET.url, delivery: 'json' }, { url: 'https://crm.muster.example/ping', delivery: 'query' }])
  seen(await client.get(`/v1/process-templates/${id}`))

  const renamed = seen(await client.patch(`${steps}/${stepId}`, { name: 'Tell our own CRM' }))
  t.equal(renamed.statusCode, 200, renamed.body)
  t.same(renamed.data.target, { url: TARGET.url, delivery: 'json' }, 'a change of other fields keeps the target')
  const stored = await ctx.db.selectFrom('template_steps').select(['target_url', 'target_delivery', 'target_secret']).where('id', '=', stepId).executeTakeFirstOrThrow()
  t.match(stored, { target_url: TARGET.url, target_delivery: 'json' })
  t.match(stored.target_secret, /^enc:v1:/, 'the secret is sealed at rest with BATON_SECRETS_KEY')
  t.notOk(stored.target_secret!.includes(SECRET.slice(6)), 'no plain secret in the row')

  const newSecret = `whsec_${randomBytes(24).toString('base64')}`
  const moved = seen(await client.patch(`${steps}/${stepId}`, { target: { url: 'https://crm2.muster.example/hook', secret: newSecret } }))
  t.equal(moved.statusCode, 200, moved.body)
  t.same(moved.data.target, { url: 'https://crm2.muster.example/hook', delivery: 'query' }, 'a target is replaced as a whole')
  assertProblem(t, await client.patch(`${steps}/${stepId}`, { target: { url: 'https://crm3.muster.example/hook' } }), 400, /secret/)

  const copy = seen(await client.post(`/v1/process-templates/${id}/copy`, {}))
  t.equal(copy.statusCode, 201, copy.body)
  t.same(copy.data.steps.map((s: { target: unknown }) => s.target),
    [{ url: 'https://crm2.muster.example/hook', delivery: 'query' }, { url: 'https://crm.muster.example/ping', delivery: 'query' }], 'a copy keeps the targets')

  for (const body of bodies) {
    t.notOk(body.includes(SECRET) || body.includes(newSecret) || body.includes(SECRET.slice(6)), 'no response holds the secret')
    t.notOk(/"secret"/.test(body), 'no response has a secret field')
  }

  const toService = await client.patch(`${steps}/${stepId}`, { target: null, serviceId: await valuationService(ctx.db, tenant.id), parameters: { mode: 'quick' } })
  t.equal(toService.statusCode, 200, toService.body)
  t.match(toService.data, { target: null, parameters: { mode: 'quick', rooms: 3 } }, 'back to a service, whose parameter rules apply again')
  const cleared = await ctx.db.selectFrom('template_steps').select('target_secret').where('id', '=', stepId).executeTakeFirstOrThrow()
  t.equal(cleared.target_secret, null, 'the secret goes with its target')
})

t.test('a step has either serviceId or target; the target is checked when the step is saved', async (t) => {
  const ctx = await setupApp(t)
  const tenant = await ctx.newTenant()
  const { client } = tenant
  const serviceId = await valuationService(ctx.db, tenant.id)
  const steps = `/v1/process-templates/${await createTemplate(client)}/steps`
  const webhook = (extra: Record<string, unknown>) => client.post(steps, { kind: 'webhook', name: 'Hook', ...extra })

  assertProblem(t, await webhook({ serviceId, parameters: { mode: 'quick' }, target: TARGET }), 422, /\/body\/target.*either a marketplace service or a target, not both/)
  assertProblem(t, await client.post(steps, { kind: 'task', name: 'Call', target: TARGET }), 422, /\/body\/target.*task step calls no target/)
  assertProblem(t, await webhook({}), 422, /\/body\/serviceId/)

  // The same SSRF rule as service URLs: a literal address in a refused range is refused at once.
  for (const [url, why] of [
    ['http://127.0.0.1:8080/hook', /loopback/],
    ['http://10.1.2.3/hook', /private network/],
    ['http://169.254.169.254/latest/meta-data', /metadata/],
    ['http://[::1]/hook', /loopback/],
    ['ftp://crm.example/hook', /scheme must be http or https/],
    ['https://user:pw@crm.example/hook', /user name or password/],
    ['https://crm.example:0/hook', /port must be between 1 and 65535/]
  ] as const) {
    const refused = await webhook({ target: { ...TARGET, url } })
    assertProblem(t, refused, 422, why)
    t.match(refused.data.errors, [{ pointer: '/body/target/url' }], `${url} is refused with a pointer`)
  }
  // A query target's own keys must reach PHP as they are, as a query service's must; json signs no query.
  for (const [query, why] of [['?api.key=abc', /"api\.key" as "api_key"/], ['?opts[a]=1', /"opts\[a\]" as an array/], ['?=1', /drops the query key ""/]] as const) {
    const refused = await webhook({ target: { ...TARGET, url: `https://crm.example/hook.php${query}`, delivery: 'query' } })
    assertProblem(t, refused, 422, /could not check the signature/)
    t.match(refused.data.errors, [{ pointer: '/body/target/url', detail: why }], `${query} is refused for query delivery`)
  }
  const ownKey = await webhook({ target: { ...TARGET, url: 'https://crm.example/hook.php?timestamp=1', delivery: 'query' } })
  assertProblem(t, ownKey, 422)
  t.match(ownKey.data.errors, [{ pointer: '/body/target/url', detail: /"timestamp" is one of the parameters Baton sets on each call/ }], 'a key Baton sets itself')
  const latin1 = await webhook({ target: { ...TARGET, url: 'https://crm.example/hook.php?ort=K%F6ln', delivery: 'query' } })
  assertProblem(t, latin1, 422)
  t.match(latin1.data.errors, [{ pointer: '/body/target/url', detail: /"ort=K%F6ln" is not UTF-8/ }], 'a query that is not UTF-8 is refused for query delivery')
  const jsonTarget = await webhook({ target: { ...TARGET, url: 'https://crm.example/hook.php?api.key=abc' } })
  t.equal(jsonTarget.statusCode, 201, jsonTarget.body)
  // One stored as a query target before the rule keeps its URL and can still be changed otherwise.
  await ctx.db.updateTable('template_steps').set({ target_delivery: 'query' }).where('id', '=', jsonTarget.data.id).execute()
  const renamed = await client.patch(`${steps}/${jsonTarget.data.id}`, { name: 'Old hook' })
  t.equal(renamed.statusCode, 200, renamed.body)
  t.same(renamed.data.target, { url: 'https://crm.example/hook.php?api.key=abc', delivery: 'query' })
  assertProblem(t, await client.patch(`${steps}/${jsonTarget.data.id}`, { target: { ...TARGET, url: renamed.data.target.url, delivery: 'query' } }), 422, /api_key/)
  await client.delete(`${steps}/${jsonTarget.data.id}`)
  assertProblem(t, await webhook({ target: { ...TARGET, secret: 'x'.repeat(30) } }), 422, /\/body\/target\/secret.*different characters/)
  assertProblem(t, await webhook({ target: { ...TARGET, secret: 'whsec_!!!!!!!!!!!!!!!!!!!!' } }), 422, /\/body\/target\/secret.*base64/)
  assertProblem(t, await webhook({ target: { ...TARGET, delivery: 'soap' } }), 400)
  assertProblem(t, await webhook({ target: { url: TARGET.url } }), 400)
  assertProblem(t, await webhook({ target: { ...TARGET, extra: 1 } }), 400)

  // Free parameters: any name a service could define and any string, number or boolean, but no context name.
  assertProblem(t, await webhook({ target: TARGET, parameters: { stepId: 'mine' } }), 422, /\/body\/parameters\/stepId.*Baton sends/)
  assertProblem(t, await webhook({ target: TARGET, parameters: { '1st': 'x' } }), 422, /\/body\/parameters\/1st.*start with a letter/)
  assertProblem(t, await webhook({ target: TARGET, parameters: { list: 'a\u0000b' } }), 422, /NUL/)
  assertProblem(t, await webhook({ target: TARGET, parameters: { list: { nested: true } } }), 400)

  const ok = await webhook({ target: TARGET, parameters: { list: 'x' } })
  t.equal(ok.statusCode, 201, ok.body)
  assertProblem(t, await client.patch(`${steps}/${ok.data.id}`, { serviceId, parameters: { mode: 'quick' } }), 422, /not both: set serviceId to null/)
  const service = await client.post(steps, { kind: 'webhook', name: 'Valuation', serviceId, parameters: { mode: 'quick' } })
  assertProblem(t, await client.patch(`${steps}/${service.data.id}`, { target: TARGET }), 422, /\/body\/target/)
  const switched = await client.patch(`${steps}/${service.data.id}`, { target: TARGET, serviceId: null, parameters: { anything: 1 } })
  t.equal(switched.statusCode, 200, switched.body)
  t.match(switched.data, { serviceId: null, target: { url: TARGET.url }, parameters: { anything: 1 } })
  t.equal((await ctx.db.selectFrom('template_steps').select('id').where('target_url', 'is not', null).execute()).length, 2, 'no refused step was stored')

  // A template whose only webhook step has a target needs no activated service to be activated.
  const own = await createTemplate(client, { name: 'Own hooks only' })
  await client.post(`/v1/process-templates/${own}/steps`, { kind: 'webhook', name: 'Hook', target: TARGET })
  const template = await client.get(`/v1/process-templates/${own}`)
  const activated = await client.patch(`/v1/process-templates/${own}`, { active: true }, { 'if-match': `"${template.data.version}"` })
  t.equal(activated.statusCode, 200, activated.body)
})

t.test('a webhook step with a target that becomes another kind drops the target and its sealed secret', async (t) => {
  const ctx = await setupApp(t, { BATON_SECRETS_KEY: SECRETS_KEY })
  const { client } = await ctx.newTenant()
  const steps = `/v1/process-templates/${await createTemplate(client)}/steps`
  const stored = (id: string) => ctx.db.selectFrom('template_steps').select(['target_url', 'target_delivery', 'target_secret', 'parameters']).where('id', '=', id).executeTakeFirstOrThrow()
  const created = await client.post(steps, { kind: 'webhook', name: 'Tell our CRM', target: TARGET, parameters: { list: 'buyers' } })
  t.equal(created.statusCode, 201, created.body)
  t.match((await stored(created.data.id)).target_secret, /^enc:v1:/)

  assertProblem(t, await client.patch(`${steps}/${created.data.id}`, { kind: 'task', target: TARGET }), 422, /\/body\/target.*a task step calls no target/)
  const task = await client.patch(`${steps}/${created.data.id}`, { kind: 'task' }, { 'if-match': '"1"' })
  t.equal(task.statusCode, 200, task.body)
  t.match(task.data, { kind: 'task', target: null, parameters: {}, version: 2 })
  t.same(await stored(created.data.id), { target_url: null, target_delivery: null, target_secret: null, parameters: {} }, 'no secret lingers in the row')
  const back = await client.patch(`${steps}/${created.data.id}`, { kind: 'webhook' })
  assertProblem(t, back, 422, /\/body\/serviceId.*needs the serviceId/)
})

t.test('with WEBHOOK_ALLOW_PRIVATE_NETWORKS a target on a private address is stored', async (t) => {
  const ctx = await setupApp(t, { WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true' })
  const { client } = await ctx.newTenant()
  const steps = `/v1/process-templates/${await createTemplate(client)}/steps`
  const created = await client.post(steps, { kind: 'webhook', name: 'Local CRM', target: { ...TARGET, url: 'http://127.0.0.1:8080/hook' } })
  t.equal(created.statusCode, 201, created.body)
  t.same(created.data.target, { url: 'http://127.0.0.1:8080/hook', delivery: 'json' })
})
