import t, { type Test } from 'tap'
import { sql } from '../../../src/db/kysely.js'
import { setupApp, type Client, type Response } from '../../helpers/app.js'
import { assertIsolated, assertProblem } from '../../helpers/assertions.js'
import { waitForLockWait } from '../../helpers/database.js'

// One app and database for the file: each test works in tenants of its own.
const ctx = await setupApp(t)

t.test('users: create, read, list, update, delete', async (t) => {
  const { client } = await ctx.newTenant()

  const anna = await client.post('/v1/users', { name: 'Anna Berg', email: 'anna@example.com' })
  t.equal(anna.statusCode, 201)
  t.match(anna.data, { id: String, name: 'Anna Berg', email: 'anna@example.com' })
  await client.post('/v1/users', { name: 'Ben Roth', email: 'ben@example.com' })

  t.equal((await client.get(`/v1/users/${anna.data.id}`)).data.name, 'Anna Berg')
  t.same((await client.get('/v1/users?q=ber')).data.items.map((u: { name: string }) => u.name), ['Anna Berg'])
  t.same((await client.get('/v1/users?email=BEN@example.com')).data.items.length, 1)
  t.same((await client.get('/v1/users?email=')).data.items, [], 'an empty address is an exact address no user has, not no filter')
  t.equal((await client.get('/v1/users?limit=1')).data.items.length, 1)

  const renamed = await client.patch(`/v1/users/${anna.data.id}`, { name: 'Anna Berg-Roth' })
  t.equal(renamed.data.name, 'Anna Berg-Roth')

  assertProblem(t, await client.post('/v1/users', { name: 'Again', email: 'ANNA@example.com' }), 409, /e-mail/)
  assertProblem(t, await client.post('/v1/users', { name: 'No mail', email: 'not-an-email' }), 400, /email/)
  // Longer than SMTP carries (RFC 5321): the mail server would refuse every mail to them.
  for (const email of [`${'a'.repeat(65)}@example.com`, `anna@${'b'.repeat(64)}.example.com`, `anna@${'c.'.repeat(124)}com`]) {
    const refused = await client.post('/v1/users', { name: 'Too long', email })
    assertProblem(t, refused, 400, /email/)
    t.match(refused.data.errors, [{ pointer: '/body/email' }], `${email.length} characters`)
  }
  t.equal((await client.post('/v1/users', { name: 'Just fits', email: `${'a'.repeat(64)}@${'b'.repeat(63)}.example.com` })).statusCode, 201, 'a local part of 64 and a label of 63')
  assertProblem(t, await client.patch(`/v1/users/${anna.data.id}`, {}), 400)
  assertProblem(t, await client.post('/v1/users', '{"name":', { 'content-type': 'application/json' }), 400)

  t.equal((await client.delete(`/v1/users/${anna.data.id}`)).statusCode, 204)
  assertProblem(t, await client.get(`/v1/users/${anna.data.id}`), 404)
})

t.test('users are invisible to other tenants', async (t) => {
  const a = await ctx.newTenant()
  const b = await ctx.newTenant()
  const user = await a.client.post('/v1/users', { name: 'Anna', email: 'anna@example.com' })
  await assertIsolated(t, b.client, { collection: '/v1/users', id: user.data.id, update: { name: 'Mallory' } })
  t.equal((await a.client.get(`/v1/users/${user.data.id}`)).data.name, 'Anna', 'unchanged')
  t.equal((await b.client.post('/v1/users', { name: 'Anna', email: 'anna@example.com' })).statusCode, 201, 'e-mails are per tenant')
})

t.test('a user still assigned a step of a process is not deleted, and the answer says why', async (t) => {
  const { client } = await ctx.newTenant()
  const anna = (await client.post('/v1/users', { name: 'Anna', email: 'anna@example.com' })).data
  const ben = (await client.post('/v1/users', { name: 'Ben', email: 'ben@example.com' })).data
  const template = (await client.post('/v1/process-templates', { name: 'Call', controllerUserId: anna.id })).data
  const step = (await client.post(`/v1/process-templates/${template.id}/steps`, { kind: 'task', name: 'Ben calls', responsibility: { user: ben.id } })).data
  t.equal((await client.patch(`/v1/process-templates/${template.id}`, { active: true })).statusCode, 200)
  const started = await client.post('/v1/process-instances', { templateId: template.id, responsibleUserId: anna.id })
  t.equal(started.data.steps[0].assigneeUserId, ben.id)
  // The template's step names Anna now: Ben is only the assignee of the process's started step.
  const version = (await client.get(`/v1/process-templates/${template.id}`)).data.steps[0].version
  t.equal((await client.patch(`/v1/process-templates/${template.id}/steps/${step.id}`, { responsibility: 'processResponsible' }, { 'if-match': `"${version}"` })).statusCode, 200)
  assertProblem(t, await client.delete(`/v1/users/${ben.id}`), 409, /^User .* is still in use: assigned steps of process instances/)
  t.equal((await client.get(`/v1/users/${ben.id}`)).statusCode, 200, 'and kept')
})

/** Anna and Ben, and an active template whose second step names Ben as its user. */
async function benCallsTemplate(t: Test, client: Client) {
  const anna = (await client.post('/v1/users', { name: 'Anna', email: 'anna@example.com' })).data
  const ben = (await client.post('/v1/users', { name: 'Ben', email: 'ben@example.com' })).data
  const template = (await client.post('/v1/process-templates', { name: 'Call' })).data
  await client.post(`/v1/process-templates/${template.id}/steps`, { kind: 'task', name: 'Prepare' })
  const step = (await client.post(`/v1/process-templates/${template.id}/steps`, { kind: 'task', name: 'Ben calls', responsibility: { user: ben.id } })).data
  t.equal((await client.patch(`/v1/process-templates/${template.id}`, { active: true })).statusCode, 200)
  return { anna, ben, template, step }
}

t.test('a user a template\'s step names, unnamed and deleted while a start from the template is writing: the process never keeps a step naming no user', async (t) => {
  const { client, id: tenantId } = await ctx.newTenant()
  const { anna, ben, template, step } = await benCallsTemplate(t, client)

  // The start's statement has read the template (Ben's step) and waits, before it locks the template
  // (its foreign key to the tenant is checked first): the step is edited and Ben deleted meanwhile.
  let starting: Promise<Response> | undefined
  let deleting: Promise<Response> | undefined
  await ctx.db.transaction().execute(async (trx) => {
    await sql`select id from tenants where id = ${tenantId} for update`.execute(trx)
    starting = client.post('/v1/process-instances', { templateId: template.id, responsibleUserId: anna.id })
    await waitForLockWait(ctx.db)
    const edited = await client.patch(`/v1/process-templates/${template.id}/steps/${step.id}`, { responsibility: 'processResponsible' })
    t.equal(edited.statusCode, 200, edited.body)
    deleting = client.delete(`/v1/users/${ben.id}`)
    // The deletion either ends, or waits for the start (which holds Ben): then let the start go on.
    await Promise.race([deleting, waitForLockWait(ctx.db, 2).catch(() => undefined)])
  })
  const [started, deleted] = await Promise.all([starting!, deleting!])
  t.equal(started.statusCode, 201, started.body)
  const { rows } = await sql<{ name: string }>`select s.name from instance_steps s
    where s.instance_id = ${started.data.id} and s.responsible_user_id is not null
      and not exists (select from users u where u.tenant_id = s.tenant_id and u.id = s.responsible_user_id)`.execute(ctx.db)
  t.same(rows, [], 'no step of the process names a user that is gone')
  if (deleted.statusCode === 204) {
    t.equal((await client.post(`/v1/process-instances/${started.data.id}/advance`, { outcome: 'done' })).statusCode, 200, 'the process goes on')
  } else {
    assertProblem(t, deleted, 409, new RegExp(`responsible for or controlling process instance ${started.data.id}`))
    t.equal((await client.get(`/v1/users/${ben.id}`)).statusCode, 200, 'Ben is kept for the step the process copied')
    const advanced = await client.post(`/v1/process-instances/${started.data.id}/advance`, { outcome: 'done' })
    t.equal(advanced.statusCode, 200, advanced.body)
    t.equal(advanced.data.steps[1].assigneeUserId, ben.id, 'the process\'s copy of the step, as it started')
  }
})

t.test('a start whose statement meets a deletion of a user its template\'s step named then: it reads the template again', async (t) => {
  const { client } = await ctx.newTenant()
  const { anna, ben, template, step } = await benCallsTemplate(t, client)

  // A deletion of Ben in progress (it holds him locked) when the start's statement, which read Ben's step, reaches him.
  let starting: Promise<Response> | undefined
  await ctx.db.transaction().execute(async (trx) => {
    await sql`select id from users where id = ${ben.id} for update`.execute(trx)
    starting = client.post('/v1/process-instances', { templateId: template.id, responsibleUserId: anna.id })
    await waitForLockWait(ctx.db)
    const edited = await client.patch(`/v1/process-templates/${template.id}/steps/${step.id}`, { responsibility: 'processResponsible' })
    t.equal(edited.statusCode, 200, edited.body)
    await sql`delete from users where id = ${ben.id}`.execute(trx)
  })
  const started = await starting!
  t.equal(started.statusCode, 201, started.body)
  const { rows } = await sql<{ responsibility: string }>`select responsibility from instance_steps
    where instance_id = ${started.data.id} order by position`.execute(ctx.db)
  t.same(rows.map((r) => r.responsibility), ['processResponsible', 'processResponsible'], 'the steps as the template has them now')
  const advanced = await client.post(`/v1/process-instances/${started.data.id}/advance`, { outcome: 'done' })
  t.equal(advanced.statusCode, 200, advanced.body)
  t.equal(advanced.data.steps[1].assigneeUserId, anna.id)
})

t.test('a user an autostart names as responsible is not deleted, and the answer names the template', async (t) => {
  const { client } = await ctx.newTenant()
  const anna = (await client.post('/v1/users', { name: 'Anna', email: 'anna@example.com' })).data
  const template = await client.post('/v1/process-templates', {
    name: 'Welcome', autostart: { on: 'recordCreated', record: 'property', responsible: { user: anna.id } }
  })
  t.equal(template.statusCode, 201, template.body)
  assertProblem(t, await client.delete(`/v1/users/${anna.id}`), 409, /responsible for the processes template "Welcome" .* starts itself/)
  t.equal((await client.get(`/v1/users/${anna.id}`)).statusCode, 200, 'and kept')

  // A template write that names the user waits for a deletion in progress, and then finds no such user.
  t.equal((await client.patch(`/v1/process-templates/${template.data.id}`, { autostart: null })).statusCode, 200)
  const [deleted, named] = await Promise.all([
    client.delete(`/v1/users/${anna.id}`),
    client.patch(`/v1/process-templates/${template.data.id}`, { autostart: { on: 'recordCreated', record: 'property', responsible: { user: anna.id } } })
  ])
  t.not(deleted.statusCode === 204 && named.statusCode === 200, true, `not both: ${deleted.body} ${named.body}`)
  t.equal((await client.delete(`/v1/process-templates/${template.data.id}`)).statusCode, 204)
  if (deleted.statusCode !== 204) t.equal((await client.delete(`/v1/users/${anna.id}`)).statusCode, 204, 'deleted once nothing names it')
})

t.test('a template or step write naming a user a deletion is removing: 422 at the field that names the user, as after the deletion', async (t) => {
  const { client } = await ctx.newTenant()
  const template = (await client.post('/v1/process-templates', { name: 'Call' })).data
  const step = (await client.post(`/v1/process-templates/${template.id}/steps`, { kind: 'task', name: 'Prepare' })).data
  const writes: [string, (userId: string) => Promise<Response>, string][] = [
    ['a new template', (id) => client.post('/v1/process-templates', { name: 'Visit', controllerUserId: id }), '/body/controllerUserId'],
    ['a template\'s change', (id) => client.patch(`/v1/process-templates/${template.id}`, { controllerUserId: id }), '/body/controllerUserId'],
    ['a new step', (id) => client.post(`/v1/process-templates/${template.id}/steps`, { kind: 'task', name: 'Call', responsibility: { user: id } }), '/body/responsibility/user'],
    ['a step\'s change', (id) => client.patch(`/v1/process-templates/${template.id}/steps/${step.id}`, { responsibility: { user: id } }), '/body/responsibility/user']
  ]
  for (const [what, write, pointer] of writes) {
    const user = (await client.post('/v1/users', { name: 'Ben', email: `ben.${writes.findIndex((w) => w[0] === what)}@example.com` })).data
    // The deletion holds the user (as DELETE /v1/users/{id} locks it) when the write comes, and deletes it once the write waits.
    let writing: Promise<Response> | undefined
    await ctx.db.transaction().execute(async (trx) => {
      await sql`select id from users where id = ${user.id} for update`.execute(trx)
      writing = write(user.id)
      await Promise.race([writing, waitForLockWait(ctx.db)])
      await sql`delete from users where id = ${user.id}`.execute(trx)
    })
    const written = await writing!
    assertProblem(t, written, 422)
    t.match(written.data.errors, [{ pointer, detail: `user ${user.id} does not exist` }], what)
  }
  const kept = (await client.get(`/v1/process-templates/${template.id}`)).data
  t.equal(kept.controllerUserId, null, 'nothing names a user that is gone')
  t.same(kept.steps.map((s: { responsibility: unknown }) => s.responsibility), ['processResponsible'])
})

t.test('a maintainer handed over and deleted while an advance assigns them the next step: the step goes to the maintainer the property has now', async (t) => {
  const { client } = await ctx.newTenant()
  const [anna, mia, nils] = await Promise.all(['anna', 'mia', 'nils'].map(async (name) =>
    (await client.post('/v1/users', { name, email: `${name}@example.com` })).data))
  const property = (await client.post('/v1/properties', { maintainerUserId: mia.id })).data
  const template = (await client.post('/v1/process-templates', { name: 'Viewing' })).data
  await client.post(`/v1/process-templates/${template.id}/steps`, { kind: 'task', name: 'Prepare' })
  await client.post(`/v1/process-templates/${template.id}/steps`, { kind: 'task', name: 'Show', responsibility: 'propertyMaintainer', refersTo: { property: true } })
  t.equal((await client.patch(`/v1/process-templates/${template.id}`, { active: true })).statusCode, 200)
  const process = (await client.post('/v1/process-instances', { templateId: template.id, responsibleUserId: anna.id, propertyId: property.id })).data

  // The advance has read Mia as the maintainer; the property is handed to Nils and Mia deleted before its write reaches her.
  let advancing: Promise<Response> | undefined
  await ctx.db.transaction().execute(async (trx) => {
    await sql`select id from users where id = ${mia.id} for update`.execute(trx)
    advancing = client.post(`/v1/process-instances/${process.id}/advance`, { outcome: 'done' })
    await Promise.race([advancing, waitForLockWait(ctx.db)])
    await sql`update properties set maintainer_user_id = ${nils.id} where id = ${property.id}`.execute(trx)
    await sql`delete from users where id = ${mia.id}`.execute(trx)
  })
  const advanced = await advancing!
  t.equal(advanced.statusCode, 200, advanced.body)
  t.equal(advanced.data.currentStep?.assigneeUserId, nils.id, 'the maintainer now')
  t.equal((await client.get(`/v1/process-instances/${process.id}`)).data.steps[1].assigneeUserId, nils.id, 'and so stored')
})

t.test('a new user racing another with the same e-mail address: the loser is told which field, as without the race', async (t) => {
  const tenant = await ctx.newTenant()
  let racing: Promise<Response> | undefined
  // The other user is written, not yet committed, when the request checks the address: its insert
  // waits on the unique index, and meets the address once the other commits.
  await ctx.db.transaction().execute(async (trx) => {
    await sql`insert into users (tenant_id, id, name, email) values (${tenant.id}, gen_random_uuid(), 'First', 'race@example.com')`.execute(trx)
    racing = tenant.client.post('/v1/users', { name: 'Second', email: 'Race@example.com' })
    await waitForLockWait(ctx.db)
  })
  const lost = await racing!
  assertProblem(t, lost, 409, /e-mail address/)
  t.match(lost.data.errors, [{ pointer: '/body/email' }])
})

t.test('a user PATCH that changes nothing keeps updatedAt', async (t) => {
  const { client } = await ctx.newTenant()
  const anna = (await client.post('/v1/users', { name: 'Anna Berg', email: 'anna@example.com' })).data
  ctx.clock.advance(60_000)
  for (const body of [{ name: 'Anna Berg' }, { name: 'Anna Berg', email: 'anna@example.com' }]) {
    const same = await client.patch(`/v1/users/${anna.id}`, body)
    t.equal(same.statusCode, 200, JSON.stringify(body))
    t.same(same.data, anna, `${JSON.stringify(body)}: the user as it was`)
  }
  t.same((await client.get(`/v1/users/${anna.id}`)).data, anna, 'stored unchanged')
  const changed = await client.patch(`/v1/users/${anna.id}`, { name: 'Anna Berg-Meyer' })
  t.equal(changed.data.updatedAt, ctx.clock.now().toISOString(), 'a change still moves updatedAt')
})

t.test('a user\'s name of whitespace only answers 422 at /body/name, on create and update', async (t) => {
  const { client } = await ctx.newTenant()
  const anna = await client.post('/v1/users', { name: 'Anna Berg', email: 'anna@example.com' })
  for (const name of [' ', '\t\n', '\u00a0\u3000']) {
    for (const response of [
      await client.post('/v1/users', { name, email: 'blank@example.com' }),
      await client.patch(`/v1/users/${anna.data.id}`, { name })
    ]) {
      assertProblem(t, response, 422, /may not be blank/)
      t.same(response.data.errors, [{ pointer: '/body/name', detail: 'must not be blank (whitespace only)' }], JSON.stringify(name))
    }
  }
  t.equal((await client.get(`/v1/users/${anna.data.id}`)).data.name, 'Anna Berg', 'unchanged')
  t.same((await client.get('/v1/users?email=blank@example.com')).data.items, [], 'no user was made')
})
