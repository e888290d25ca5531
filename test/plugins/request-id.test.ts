import { Writable } from 'node:stream'
import pino from 'pino'
import t from 'tap'
import { buildApp, serverOptions } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { openPostgres } from '../../src/db/connect.js'
import { client, setupApp } from '../helpers/app.js'
import { databaseUrl } from '../helpers/database.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

t.test('an X-Request-Id is echoed in every answer and in problem bodies', async (t) => {
  const { anonymous, operator } = await setupApp(t)
  const live = await anonymous.get('/health/live', { 'x-request-id': 'crm-7f3a-0001' })
  t.equal(live.headers['x-request-id'], 'crm-7f3a-0001', 'a success names it')
  t.same(live.data, { status: 'ok' }, 'and keeps its body as it was')

  const missing = await operator.get('/v1/nothing-here', { 'x-request-id': 'crm-7f3a-0002' })
  t.equal(missing.statusCode, 404)
  t.equal(missing.headers['x-request-id'], 'crm-7f3a-0002')
  t.match(missing.data, { status: 404, instance: '/v1/nothing-here', requestId: 'crm-7f3a-0002' }, 'the problem names it')

  const invalid = await operator.post('/v1/tenants', { name: '' }, { 'x-request-id': 'crm-7f3a-0003' })
  t.equal(invalid.statusCode, 400)
  t.match(invalid.data, { status: 400, errors: Array, requestId: 'crm-7f3a-0003' }, 'a problem serialized by its route schema keeps it')

  const unauthorized = await anonymous.get('/v1/tenants', { 'x-request-id': 'crm-7f3a-0004' })
  t.equal(unauthorized.statusCode, 401)
  t.equal(unauthorized.headers['x-request-id'], 'crm-7f3a-0004', 'a refusal before the route names it too')
  t.equal(unauthorized.data.requestId, 'crm-7f3a-0004')
})

t.test('without a usable X-Request-Id, each request gets a new UUID', async (t) => {
  const { anonymous } = await setupApp(t)
  const ids: string[] = []
  for (const header of [undefined, '', 'has space', 'x'.repeat(129), 'naïve', 'tab\tinside']) {
    const response = await anonymous.get('/v1/nothing-here', header === undefined ? {} : { 'x-request-id': header })
    const id = String(response.headers['x-request-id'])
    t.match(id, UUID, `${JSON.stringify(header)} is replaced by a UUID`)
    t.equal(response.data.requestId, id, 'the body names the same id')
    ids.push(id)
  }
  t.equal(new Set(ids).size, ids.length, 'a new one each time')
  const longest = 'x'.repeat(128)
  t.equal((await anonymous.get('/health/live', { 'x-request-id': longest })).headers['x-request-id'], longest, '128 characters are accepted')
})

t.test('the request id is in every log line of the request', async (t) => {
  const lines: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString().trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>))
      done()
    }
  })
  const config = loadConfig({ LOG_LEVEL: 'info' })
  const database = openPostgres(databaseUrl('baton_no_such_database'), { poolMax: 1 })
  const app = await buildApp({ config, db: database.db, operatorKeyHash: '0'.repeat(64) }, serverOptions(config, pino({ level: 'info' }, stream)))
  t.teardown(async () => {
    await app.close()
    await database.close()
  })
  await client(app).get('/v1/nothing-here', { 'x-request-id': 'trace-me-42' })
  const mine = lines.filter((line) => line.requestId === 'trace-me-42')
  t.same(mine.map((line) => line.msg), ['incoming request', 'request completed'], 'both request lines carry it as requestId')
})
