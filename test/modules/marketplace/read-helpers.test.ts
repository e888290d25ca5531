import t from 'tap'
import { findServiceById } from '../../../src/modules/marketplace/services/repository.js'
import { setupApp } from '../../helpers/app.js'
import { createService } from './fixtures/catalogue.js'

t.test('findServiceById reads a service with its secret; an unknown id is undefined', async (t) => {
  const { operator, db } = await setupApp(t)
  const service = await createService(operator, { secret: 'the-signing-secret-424242' })

  t.match(await findServiceById(db, service.id), { id: service.id, secret: 'the-signing-secret-424242', webhook_url: service.webhookUrl })
  t.equal(await findServiceById(db, '00000000-0000-4000-8000-000000000000'), undefined)
})
