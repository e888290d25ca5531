import t from 'tap'
import { findServiceById, isServiceActivated, listParameterDefinitions } from '../../../src/modules/marketplace/services/repository.js'
import { setupApp } from '../../helpers/app.js'
import { createService } from './fixtures/catalogue.js'

t.test('read helpers for other modules', async (t) => {
  const { operator, db, newTenant } = await setupApp(t)
  const a = await newTenant()
  const b = await newTenant()
  const service = await createService(operator, { secret: 'the-signing-secret-424242' })
  const base = `/v1/marketplace-services/${service.id}/parameters`
  await operator.post(base, { name: 'mode', type: 'enum', allowedValues: ['fast', 'exact'], default: 'fast' })
  await operator.post(base, { name: 'rooms', type: 'integer', required: true })
  await a.client.put(`/v1/marketplace-services/${service.id}/activation`)

  t.match(await findServiceById(db, service.id), { id: service.id, secret: 'the-signing-secret-424242', webhook_url: service.webhookUrl })
  t.equal(await findServiceById(db, '00000000-0000-4000-8000-000000000000'), undefined)

  const definitions = await listParameterDefinitions(db, service.id)
  t.match(definitions, [
    { name: 'mode', type: 'enum', allowed_values: ['fast', 'exact'], default_value: 'fast', required: false },
    { name: 'rooms', type: 'integer', allowed_values: null, default_value: null, required: true }
  ], 'in creation order, JSON columns parsed, no default = SQL null')

  t.equal(await isServiceActivated(db, a.id, service.id), true)
  t.equal(await isServiceActivated(db, b.id, service.id), false)
})
