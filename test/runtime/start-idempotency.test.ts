import { randomUUID } from 'node:crypto'
import net, { type AddressInfo } from 'node:net'
import { isDeepStrictEqual } from 'node:util'
import pg from 'pg'
import t, { type Test } from 'tap'
import type { Database } from '../../src/db/database.js'
import { Kysely, PostgresDialect } from '../../src/db/kysely.js'
import { TRIGGERS_NOTIFY } from '../../src/db/wakeups.js'
import { startInstance } from '../../src/modules/instances/service.js'
import { removeOldHistory } from '../../src/scheduler/remove-old-history.js'
import { DAY, MINUTE } from '../helpers/clock.js'
import { refuseActivitiesWhere } from '../helpers/database.js'
import { setupRuntime } from '../helpers/runtime.js'

// A start with an Idempotency-Key, retried over real HTTP: what each retry answers, whatever happened
// to the first attempt or happens beside the retry; the processes are counted on the database's rows.

const rt = await setupRuntime(t, { env: { RATE_LIMIT_MAX: '0' } })
await rt.app.listen({ port: 0, host: '127.0.0.1' })
const port = (rt.app.server.address() as AddressInfo).port
const base = '/v1/process-instances'
const pgc = new pg.Client({ connectionString: rt.databaseUrl })
await pgc.connect()
t.teardown(() => pgc.end())

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests read JSON freely
interface Answer { status: number; text: string; data: any; headers: Headers }

async function postText(text: string, key: string | undefined, apiKey = rt.tenant.key): Promise<Answer> {
  const response = await fetch(`http://127.0.0.1:${port}${base}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', ...(key === undefined ? {} : { 'idempotency-key': key }) },
    body: text
  })
  const answer = await response.text()
  return { status: response.status, text: answer, data: answer ? JSON.parse(answer) : undefined, headers: response.headers }
}
const post = (body: unknown, key: string | undefined, apiKey?: string) => postText(JSON.stringify(body), key, apiKey)

/** A start sent as raw bytes, for header lines fetch would refuse to send: the status line and the body. */
function postRaw(headerLines: string[], body: unknown): Promise<{ status: number; text: string }> {
  const text = JSON.stringify(body)
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    socket.on('data', (chunk) => chunks.push(chunk))
    socket.on('end', () => {
      const all = Buffer.concat(chunks).toString('utf8')
      resolve({ status: Number(all.split(' ')[1]), text: all.slice(all.indexOf('\r\n\r\n') + 4) })
    })
    socket.on('error', reject)
    const head = [`POST ${base} HTTP/1.1`, 'Host: 127.0.0.1', `Authorization: Bearer ${rt.tenant.key}`, 'Content-Type: application/json',
      `Content-Length: ${Buffer.byteLength(text)}`, 'Connection: close', ...headerLines].join('\r\n')
    socket.end(Buffer.concat([Buffer.from(`${head}\r\n\r\n`, 'latin1'), Buffer.from(text)]))
  })
}

async function processesWith(key: string, tenantId = rt.tenant.id): Promise<string[]> {
  const { rows } = await pgc.query('select id from process_instances where tenant_id = $1 and idempotency_key = $2', [tenantId, key])
  return rows.map((row: { id: string }) => row.id)
}

function assertProblem(t: Test, answer: Answer | { status: number; text: string }, status: number, pattern: RegExp): void {
  t.equal(answer.status, status, answer.text)
  t.match(answer.text, pattern)
  if ('headers' in answer) t.match(answer.headers.get('content-type'), /^application\/problem\+json/)
}

t.test('retried one after another and 40 at once: one process, every retry 200 with its headers and body', async (t) => {
  const templateId = await rt.template([{ kind: 'webhook', name: 'Order a valuation', refersTo: { property: true } }, { kind: 'task', name: 'Call the owner' }])
  const body = { templateId, responsibleUserId: rt.worker.id, propertyId: rt.propertyId }

  const key = `retried-${randomUUID()}`
  const first = await post(body, key)
  t.equal(first.status, 201, first.text)
  t.equal(first.headers.get('idempotent-replayed'), null)
  for (let i = 0; i < 5; i++) {
    const again = await post(body, key)
    t.equal(again.status, 200, again.text)
    t.equal(again.headers.get('idempotent-replayed'), 'true')
    t.equal(again.headers.get('location'), first.headers.get('location'))
    t.equal(again.headers.get('etag'), first.headers.get('etag'))
    t.same(again.data, first.data, 'the process as the first answer had it (nothing has moved it since)')
  }
  t.same(await processesWith(key), [first.data.id])

  const burstKey = `burst-${randomUUID()}`
  const burst = await Promise.all(Array.from({ length: 40 }, () => post(body, burstKey)))
  const created = burst.filter((a) => a.status === 201)
  t.equal(created.length, 1, burst.map((a) => a.status).join(' '))
  t.ok(burst.every((a) => a.status === 201 || (a.status === 200 && a.headers.get('idempotent-replayed') === 'true')))
  t.ok(burst.every((a) => a.headers.get('location') === created[0]!.headers.get('location') && a.headers.get('etag') === '"1"'))
  t.ok(burst.every((a) => isDeepStrictEqual(a.data, created[0]!.data)), 'every answer holds the same process')
  t.same(await processesWith(burstKey), [created[0]!.data.id])
})

t.test('the same key with another start answers 422; the same start written otherwise replays', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Call the owner' }])
  const otherTemplate = await rt.template([{ kind: 'task', name: 'Call the owner' }])
  const address = (await rt.api.post('/v1/addresses', { fields: { city: 'Kiel' } })).data
  const key = `other-${randomUUID()}`
  const body = { templateId, responsibleUserId: rt.worker.id }
  const first = await post(body, key)
  t.equal(first.status, 201, first.text)

  for (const other of [
    { ...body, templateId: otherTemplate },
    { ...body, responsibleUserId: rt.controller.id },
    { ...body, propertyId: rt.propertyId },
    { ...body, addressId: address.id },
    { ...body, templateId: randomUUID() }
  ]) {
    assertProblem(t, await post(other, key), 422, new RegExp(`Idempotency-Key was used for a different start \\(process ${first.data.id}\\)`))
  }
  for (const same of [
    JSON.stringify({ responsibleUserId: rt.worker.id, templateId }),
    `{ "templateId" :  "${templateId}",\n\t"responsibleUserId": "${rt.worker.id}" }`,
    JSON.stringify({ templateId: templateId.toUpperCase(), responsibleUserId: rt.worker.id.toUpperCase() }),
    JSON.stringify({ ...body, propertyId: null, addressId: null })
  ]) {
    const again = await postText(same, key)
    t.equal(again.status, 200, `${same}: ${again.text}`)
    t.equal(again.data.id, first.data.id)
  }
  assertProblem(t, await post({ ...body, colour: 'blue' }, key), 400, /\/body\/colour/)
  t.same(await processesWith(key), [first.data.id], 'nothing but the first process')
})

t.test('a key is the tenant\'s own, also when two tenants start with it at once', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Call the owner' }])
  const other = await rt.newTenant({ name: 'Andere Immobilien' })
  const user = (await other.client.post('/v1/users', { name: 'Otto Other', email: 'otto@example.com' })).data
  const template = (await other.client.post('/v1/process-templates', { name: 'Their process' })).data
  await other.client.post(`/v1/process-templates/${template.id}/steps`, { kind: 'task', name: 'Their task' })
  t.equal((await other.client.patch(`/v1/process-templates/${template.id}`, { active: true })).statusCode, 200)

  const key = `shared-${randomUUID()}`
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2
    ? post({ templateId: template.id, responsibleUserId: user.id }, key, other.key)
    : post({ templateId, responsibleUserId: rt.worker.id }, key))))
  t.same(answers.map((a) => a.status).sort(), [...Array(18).fill(200), 201, 201])
  const ours = await processesWith(key)
  const theirs = await processesWith(key, other.id)
  t.equal(ours.length, 1)
  t.equal(theirs.length, 1)
  answers.forEach((a, i) => t.equal(a.data.id, i % 2 ? theirs[0] : ours[0]))
})

t.test('a start refused or failed leaves its key unused: the retry starts the process', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Call the owner' }])
  const body = { templateId, responsibleUserId: rt.worker.id }
  const key = `refused-${randomUUID()}`

  const current = (await rt.api.get(`/v1/process-templates/${templateId}`)).data
  t.equal((await rt.api.patch(`/v1/process-templates/${templateId}`, { active: false }, { 'if-match': `"${current.version}"` })).statusCode, 200)
  assertProblem(t, await post(body, key), 422, /not active/)
  assertProblem(t, await post({ templateId }, key), 400, /\/body\/responsibleUserId/)
  t.same(await processesWith(key), [])
  t.equal((await rt.api.patch(`/v1/process-templates/${templateId}`, { active: true })).statusCode, 200)
  const started = await post(body, key)
  t.equal(started.status, 201, started.text)
  t.same(await processesWith(key), [started.data.id])

  // A fault in the database (an activity it refuses until the clock moves on): 500, nothing written.
  await refuseActivitiesWhere(t, rt.db, `new.kind = 'processStarted' and new.created_at <= '${rt.clock.now().toISOString()}'`)
  const faultKey = `fault-${randomUUID()}`
  assertProblem(t, await post(body, faultKey), 500, /Something went wrong/)
  t.same(await processesWith(faultKey), [])
  rt.clock.advance(MINUTE)
  const retried = await post(body, faultKey)
  t.equal(retried.status, 201, retried.text)
  t.same(await processesWith(faultKey), [retried.data.id])
})

t.test('a key that is empty, too long, not printable ASCII or given twice: 400 naming the header', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Call the owner' }])
  const body = { templateId, responsibleUserId: rt.worker.id }
  for (const bad of ['', 'k'.repeat(201), 'k'.repeat(10_000), 'with space', 'with\ttab']) {
    assertProblem(t, await post(body, bad), 400, /\/headers\/idempotency-key/)
  }
  for (const lines of [
    ['Idempotency-Key: twice', 'Idempotency-Key: twice'],
    ['Idempotency-Key: first', 'Idempotency-Key: second'],
    ['Idempotency-Key:    '],
    [Buffer.from('Idempotency-Key: schlüssel').toString('latin1')],
    ['Idempotency-Key: schl\xfcssel']
  ]) {
    const answer = await postRaw(lines, body)
    t.equal(answer.status, 400, `${JSON.stringify(lines)}: ${answer.text}`)
    t.match(answer.text, /\/headers\/idempotency-key/)
  }
  const longest = 'k'.repeat(200)
  t.equal((await post(body, longest)).status, 201)
  t.equal((await post(body, longest)).status, 200)
  t.equal((await post(body, '  padded  ')).status, 201, 'the spaces around a header\'s value are not part of it')
  t.equal((await post(body, 'padded')).status, 200)
  t.same((await rt.api.get(`${base}?templateId=${templateId}`)).data.items.length, 2, 'no refused key started a process')
})

t.test('a key is kept as long as its process: an ended one replays, one the retention removed starts anew', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'Call the owner' }])
  const body = { templateId, responsibleUserId: rt.worker.id }
  const key = `ended-${randomUUID()}`
  const first = await post(body, key)
  t.equal(first.status, 201, first.text)
  t.equal((await rt.api.post(`${base}/${first.data.id}/cancel`, {})).statusCode, 200)
  const replay = await post(body, key)
  t.equal(replay.status, 200, replay.text)
  t.match(replay.data, { id: first.data.id, status: 'cancelled', version: 2 }, 'the process as it is now')
  t.equal(replay.headers.get('etag'), '"2"')

  rt.clock.advance(89 * DAY)
  await removeOldHistory(rt.db, rt.clock.now(), 90)
  t.equal((await post(body, key)).data.id, first.data.id, 'kept within the retention')
  rt.clock.advance(2 * DAY)
  await removeOldHistory(rt.db, rt.clock.now(), 90)
  const anew = await post(body, key)
  t.equal(anew.status, 201, anew.text)
  t.not(anew.data.id, first.data.id)
  t.same(await processesWith(key), [anew.data.id])
  t.equal((await rt.api.post(`${base}/${anew.data.id}/cancel`, {})).statusCode, 200)
})

t.test('a replay that meets an advance answers the process as it was before it or after it, never half of each', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'First' }, { kind: 'task', name: 'Second' }])
  const body = { templateId, responsibleUserId: rt.worker.id }
  const key = `torn-${randomUUID()}`
  const first = await post(body, key)
  t.equal(first.status, 201, first.text)

  // The replay's own connection: once it has read the process by its key, the process advances.
  let advanced: Awaited<ReturnType<typeof rt.api.post>> | undefined
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: rt.databaseUrl, max: 1 }) }),
    log: async (event) => {
      if (advanced || !/idempotency_key/.test(event.query.sql)) return
      advanced = await rt.api.post(`${base}/${first.data.id}/advance`, { outcome: 'done' })
    }
  })
  t.teardown(() => db.destroy())
  const replay = await startInstance(db, rt.clock, TRIGGERS_NOTIFY, rt.tenant.id, body, key)
  t.equal(advanced?.statusCode, 200, advanced?.body ?? 'no advance')
  t.notOk(replay.created)
  const after = (await rt.api.get(`${base}/${first.data.id}`)).data
  const answered = JSON.parse(JSON.stringify(replay.instance))
  t.ok([first.data, after].some((state) => isDeepStrictEqual(answered, state)),
    `the replay is one of the process's states: ${JSON.stringify({ version: answered.version, currentStep: answered.currentStep, states: answered.steps.map((s: { state: string }) => s.state) })}`)
  t.equal((await rt.api.post(`${base}/${first.data.id}/cancel`, {})).statusCode, 200)
})
