import t from 'tap'
import { sql } from '../../../src/db/kysely.js'
import { setupApp } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { waitForLockWait } from '../../helpers/database.js'
import { MINUTE } from '../../helpers/clock.js'
import { createService, insertTemplateWithStep } from './fixtures/catalogue.js'

const UNKNOWN = '00000000-0000-4000-8000-000000000000'

t.test('a tenant activates and deactivates a service', async (t) => {
  const { operator, clock, newTenant } = await setupApp(t)
  const { client } = await newTenant()
  const service = await createService(operator)
  const url = `/v1/marketplace-services/${service.id}/activation`

  assertProblem(t, await client.get(url), 404, /Activation/)
  const activated = await client.put(url)
  t.equal(activated.statusCode, 200)
  t.same(activated.data, { serviceId: service.id, activated: true, activatedAt: clock.now().toISOString() })

  clock.advance(5 * MINUTE)
  t.same((await client.put(url)).data, activated.data, 'idempotent: the first activation stands')
  t.same((await client.get(url)).data, activated.data)
  t.equal((await client.get(`/v1/marketplace-services/${service.id}`)).data.activated, true)

  t.equal((await client.delete(url)).statusCode, 204)
  assertProblem(t, await client.get(url), 404)
  t.equal((await client.delete(url)).statusCode, 204, 'idempotent')
  t.equal((await client.get(`/v1/marketplace-services/${service.id}`)).data.activated, false)
})

t.test('activation needs a known, active service and a tenant key', async (t) => {
  const { operator, newTenant } = await setupApp(t)
  const { client } = await newTenant()
  const inactive = await createService(operator, { active: false })
  const service = await createService(operator)

  assertProblem(t, await client.put(`/v1/marketplace-services/${UNKNOWN}/activation`), 404)
  assertProblem(t, await client.delete(`/v1/marketplace-services/${UNKNOWN}/activation`), 404)
  // An inactive service the tenant never activated is not in its catalogue: the same 404 as an unknown id.
  assertProblem(t, await client.put(`/v1/marketplace-services/${inactive.id}/activation`), 404, /not found/)
  const withdrawn = await createService(operator)
  await client.put(`/v1/marketplace-services/${withdrawn.id}/activation`)
  await operator.patch(`/v1/marketplace-services/${withdrawn.id}`, { active: false })
  assertProblem(t, await client.put(`/v1/marketplace-services/${withdrawn.id}/activation`), 422, /not active/)
  assertProblem(t, await client.put('/v1/marketplace-services/not-a-uuid/activation'), 400)
  assertProblem(t, await operator.put(`/v1/marketplace-services/${service.id}/activation`), 403)
  assertProblem(t, await operator.get(`/v1/marketplace-services/${service.id}/activation`), 403)
  assertProblem(t, await operator.delete(`/v1/marketplace-services/${service.id}/activation`), 403)
})

t.test('a service the tenant\'s templates use cannot be deactivated', async (t) => {
  const { operator, db, newTenant } = await setupApp(t)
  const a = await newTenant()
  const b = await newTenant()
  const service = await createService(operator)
  const url = `/v1/marketplace-services/${service.id}/activation`
  await a.client.put(url)
  await b.client.put(url)
  const { templateId } = await insertTemplateWithStep(db, { tenantId: a.id, serviceId: service.id, templateName: 'Newsletter sync' })

  const refused = await a.client.delete(url)
  assertProblem(t, refused, 409, /Newsletter sync/)
  t.match(refused.data.detail, templateId)
  t.equal((await a.client.get(url)).statusCode, 200, 'still activated')
  t.equal((await b.client.delete(url)).statusCode, 204, 'another tenant\'s templates do not count')

  await db.deleteFrom('process_templates').where('id', '=', templateId).execute()
  t.equal((await a.client.delete(url)).statusCode, 204)
})

t.test('activation is per tenant', async (t) => {
  const { operator, newTenant } = await setupApp(t)
  const a = await newTenant()
  const b = await newTenant()
  const service = await createService(operator)
  const url = `/v1/marketplace-services/${service.id}/activation`
  await a.client.put(url)

  assertProblem(t, await b.client.get(url), 404, /Activation/)
  t.equal((await b.client.get(`/v1/marketplace-services/${service.id}`)).data.activated, false)
  t.same((await b.client.get('/v1/marketplace-services?activated=true')).data.items, [])
  t.equal((await b.client.delete(url)).statusCode, 204, 'B deactivating its own non-activation')
  t.equal((await a.client.get(url)).statusCode, 200, 'A is still activated')
  t.equal((await a.client.get(`/v1/marketplace-services/${service.id}`)).data.activated, true)

  await operator.patch(`/v1/marketplace-services/${service.id}`, { active: false })
  t.equal((await a.client.get(`/v1/marketplace-services/${service.id}`)).statusCode, 200, 'A still sees the service it activated')
  assertProblem(t, await b.client.get(`/v1/marketplace-services/${service.id}`), 404, /not found/)
})

t.test('an activation that meets the service\'s deletion answers 404: the service was deleted', async (t) => {
  const { operator, db, newTenant } = await setupApp(t)
  const { client } = await newTenant()
  const service = await createService(operator)
  // The operator's delete holds the service's row, then commits: the activation read the service and waits in its write.
  let release!: () => void
  let locked!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  const isLocked = new Promise<void>((resolve) => { locked = resolve })
  const deleting = db.transaction().execute(async (trx) => {
    await sql`select id from marketplace_services where id = ${service.id} for update`.execute(trx)
    locked()
    await released
    await sql`delete from marketplace_services where id = ${service.id}`.execute(trx)
  })
  await isLocked
  const activating = client.put(`/v1/marketplace-services/${service.id}/activation`)
  await waitForLockWait(db)
  release()
  await deleting
  assertProblem(t, await activating, 404, new RegExp(`Marketplace service ${service.id} was deleted`))
  assertProblem(t, await client.put(`/v1/marketplace-services/${service.id}/activation`), 404, /not found/)
})
