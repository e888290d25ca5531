import { sql } from '../../../src/db/kysely.js'
import t from 'tap'
import type { DB } from '../../../src/db/connect.js'
import { setupApp } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { activate, addTaskStep, createService, createTemplate } from './fixtures.js'

// One app and database for the file: each test works in tenants of its own.
const ctx = await setupApp(t)

// The catalogue is set up through the API here, so the rules are checked the way a tenant meets them:
// a webhook step needs a service that is active (operator) and activated by this tenant.

t.test('a service the tenant deactivated cannot be used by webhook steps', async (t) => {
  const { operator, newTenant } = ctx
  const { client } = await newTenant()
  const service = await operator.post('/v1/marketplace-services', { name: 'Valuation', provider: 'Acme', webhookUrl: 'https://provider.example/hook' })
  t.equal(service.statusCode, 201)
  const serviceId = service.data.id
  const parameter = await operator.post(`/v1/marketplace-services/${serviceId}/parameters`, { name: 'mode', type: 'string', required: true })
  t.equal(parameter.statusCode, 201, parameter.body)
  const activation = `/v1/marketplace-services/${serviceId}/activation`
  t.equal((await client.put(activation)).statusCode, 200)

  const template = await createTemplate(client)
  const steps = `/v1/process-templates/${template}/steps`
  const hook = { kind: 'webhook', name: 'Value it', serviceId, parameters: { mode: 'full' } }
  const created = await client.post(steps, hook)
  t.equal(created.statusCode, 201, 'usable while activated')
  assertProblem(t, await client.delete(activation), 409, /remove those steps first/)
  t.equal((await client.delete(`${steps}/${created.data.id}`)).statusCode, 204)
  t.equal((await client.delete(activation)).statusCode, 204, 'deactivated once no step uses it')

  const notActivated = /\/body\/serviceId.*not activated for this tenant/
  assertProblem(t, await client.post(steps, hook), 422, notActivated)
  const taskId = await addTaskStep(client, template, 'Call the owner')
  assertProblem(t, await client.patch(`${steps}/${taskId}`, hook), 422, notActivated)
  t.match((await client.get(`${steps}/${taskId}`)).data, { kind: 'task', serviceId: null, version: 1 }, 'the refused update changed nothing')

  t.equal((await client.put(activation)).statusCode, 200)
  const updated = await client.patch(`${steps}/${taskId}`, hook)
  t.equal(updated.statusCode, 200, 'usable again once reactivated')
  t.match(updated.data, { kind: 'webhook', serviceId })
})

t.test('a service the operator deactivated cannot be used by webhook steps, even when the tenant activated it', async (t) => {
  const { operator, newTenant } = ctx
  const { client } = await newTenant()
  const service = await operator.post('/v1/marketplace-services', { name: 'Valuation', provider: 'Acme', webhookUrl: 'https://provider.example/hook' })
  const serviceId = service.data.id
  t.equal((await client.put(`/v1/marketplace-services/${serviceId}/activation`)).statusCode, 200)

  const template = await createTemplate(client)
  const steps = `/v1/process-templates/${template}/steps`
  const hook = { kind: 'webhook', name: 'Value it', serviceId }
  const created = await client.post(steps, hook)
  t.equal(created.statusCode, 201)

  t.equal((await operator.patch(`/v1/marketplace-services/${serviceId}`, { active: false })).statusCode, 200)
  const notActive = /\/body\/serviceId.*not an active marketplace service/
  assertProblem(t, await client.post(steps, hook), 422, notActive)
  assertProblem(t, await client.patch(`${steps}/${created.data.id}`, { name: 'Value it again' }), 422, notActive)
  const taskId = await addTaskStep(client, template, 'Call the owner')
  assertProblem(t, await client.patch(`${steps}/${taskId}`, hook), 422, notActive)
})

/** Whether a session on this test's database comes to wait for a lock within a few seconds. */
async function someoneWaitsForALock(db: DB): Promise<boolean> {
  for (let i = 0; i < 100; i += 1) {
    const { rows } = await sql<{ waiting: number }>`
      select count(*)::int as waiting from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`.execute(db)
    if ((rows[0]?.waiting ?? 0) > 0) return true
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return false
}

/** Runs `work` in a transaction that stays open until `release` is called; `ready` resolves once `work` is done. */
function openTransaction(db: DB, work: (trx: DB) => Promise<void>) {
  let release!: () => void
  let ready!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  const isReady = new Promise<void>((resolve) => { ready = resolve })
  const done = db.transaction().execute(async (trx) => {
    await work(trx)
    ready()
    await released
  })
  return { ready: isReady, release, done }
}

t.test('a step write racing a deactivation never leaves a step on a deactivated service', async (t) => {
  const tenant = await ctx.newTenant()
  const { client } = tenant
  const serviceId = await createService(ctx.db)
  await activate(ctx.db, tenant.id, serviceId)
  const template = await createTemplate(client)
  const steps = `/v1/process-templates/${template}/steps`
  const activation = `/v1/marketplace-services/${serviceId}/activation`
  const activationRow = (db: DB) => db.selectFrom('service_activations').select('service_id')
    .where('tenant_id', '=', tenant.id).where('service_id', '=', serviceId)

  // A deactivation holds the activation and deletes it: the step write waits, then finds it gone.
  const deactivating = openTransaction(ctx.db, async (trx) => {
    await activationRow(trx).forUpdate().execute()
    await trx.deleteFrom('service_activations').where('tenant_id', '=', tenant.id).where('service_id', '=', serviceId).execute()
  })
  await deactivating.ready
  const stepWrite = client.post(steps, { kind: 'webhook', name: 'Value it', serviceId })
  const stepWaited = await someoneWaitsForALock(ctx.db)
  deactivating.release()
  await deactivating.done
  t.ok(stepWaited, 'the step write waits for the deactivation')
  assertProblem(t, await stepWrite, 422, /not activated for this tenant/)

  // A step write holds the activation while it adds its step: the deactivation waits, then sees the step.
  await activate(ctx.db, tenant.id, serviceId)
  const writing = openTransaction(ctx.db, async (trx) => {
    await activationRow(trx).forShare().execute()
    await trx.insertInto('template_steps').values({
      tenant_id: tenant.id, id: '00000000-0000-4000-8000-0000000000aa', template_id: template, position: 1, kind: 'webhook',
      name: 'Value it', start_mode: 'afterPrevious', responsibility: 'processResponsible', refers_to_property: false,
      refers_to_address: false, service_id: serviceId, parameters: {}
    }).execute()
  })
  await writing.ready
  const deactivation = client.delete(activation)
  const deactivationWaited = await someoneWaitsForALock(ctx.db)
  writing.release()
  await writing.done
  t.ok(deactivationWaited, 'the deactivation waits for the step write')
  assertProblem(t, await deactivation, 409, /remove those steps first/)
  t.equal((await client.get(activation)).statusCode, 200, 'still activated')
})
