import t from 'tap'
import { sql } from '../../src/db/kysely.js'
import { lockRecordsInOrder, patchRecord } from '../../src/modules/records/repository.js'
import { runAutomaticSteps } from '../../src/scheduler/automatic-steps/run-automatic-steps.js'
import { waitForLockWait } from '../helpers/database.js'
import { setupRuntime } from '../helpers/runtime.js'

// One runtime for the file: writeValues steps carried out by the scheduler on real Postgres, SMTP and a loopback provider.
const rt = await setupRuntime(t)
// The fixture's service watches askingPrice, as a portal that republishes a listing would.
await rt.operator.post(`/v1/marketplace-services/${rt.serviceId}/triggers`, { module: 'property', events: ['update'], fields: ['askingPrice'] })

async function newProperty(fields: Record<string, unknown>): Promise<string> {
  const made = await rt.api.post('/v1/properties', { maintainerUserId: rt.worker.id, fields })
  if (made.statusCode !== 201) throw new Error(made.body)
  return made.data.id as string
}

const writeStep = {
  kind: 'writeValues', name: 'Set the asking price', refersTo: { property: true },
  writeValues: {
    values: [
      { record: 'property', field: 'askingPrice', value: { multiply: [{ field: 'property.price' }, 1.1] } },
      { record: 'property', field: 'askingPriceSetOn', value: { today: { plusDays: 1 } } },
      { record: 'property', field: 'status', value: 'listed' },
      { record: 'property', field: 'draft', value: null },
      { record: 'property', field: 'tags', value: { literal: ['new', 'priced'] } }
    ]
  }
}

t.test('writeValues writes the fields as a PATCH would, fires the record\'s triggers and leaves an activity naming the process', async (t) => {
  const templateId = await rt.template([writeStep, { kind: 'task', name: 'Check the listing' }])
  const propertyId = await newProperty({ price: 400000, draft: true, street: 'Lindenweg 3' })
  const started = await rt.start(templateId, { propertyId })
  t.equal(started.steps[0].state, 'due')
  t.same(started.steps[0].writeValues, writeStep.writeValues, 'the instance step shows what it writes')

  const calls = rt.provider.calls.length
  const run = await rt.scheduler.runOnce()
  t.equal(run.automaticSteps, 1)
  t.equal(run.deliveries, 1, 'the trigger\'s delivery was made in the same run')
  const view = await rt.instance(started.id)
  t.same(view.steps.map((s: { state: string }) => s.state), ['done', 'due'])

  const property = (await rt.api.get(`/v1/properties/${propertyId}`)).data
  // The test clock stands at 2026-03-02 09:00 UTC: 10:00 in Berlin, so tomorrow there is 2026-03-03.
  t.same(property.fields, { price: 400000, street: 'Lindenweg 3', askingPrice: 440000.00000000006, askingPriceSetOn: '2026-03-03', status: 'listed', tags: ['new', 'priced'] })
  t.equal(property.version, 2, 'one write')

  const triggered = rt.provider.calls.slice(calls)
  t.equal(triggered.length, 1)
  t.equal(triggered[0]!.query.estateId, propertyId)
  const deliveries = (await rt.api.get('/v1/deliveries?limit=100')).data.items.filter((d: { propertyId: string; source: string }) => d.propertyId === propertyId && d.source === 'trigger')
  t.match(deliveries, [{ event: 'update', changedFields: ['askingPrice', 'askingPriceSetOn', 'draft', 'status', 'tags'], status: 'succeeded' }])

  const activities = (await rt.api.get(`/v1/properties/${propertyId}/activities?limit=100`)).data.items
  const written = activities.find((a: { kind: string }) => a.kind === 'recordUpdatedByProcess')
  t.match(written, {
    message: 'Process "Re-value a property" (step "Set the asking price") set askingPrice, askingPriceSetOn, draft, status, tags.',
    instanceId: started.id, stepId: started.steps[0].id
  })
})

t.test('a value that cannot be computed writes nothing and fails the step into a manual one, mailing the controller', async (t) => {
  const templateId = await rt.template([writeStep, { kind: 'task', name: 'Check the price' }])
  const propertyId = await newProperty({ price: 'on request', draft: true })
  const started = await rt.start(templateId, { propertyId })
  // The record the step writes cannot go away before it runs: a record linked to a process is not deleted.
  t.equal((await rt.api.delete(`/v1/properties/${propertyId}`)).statusCode, 409)
  await rt.scheduler.runOnce()
  let view = await rt.instance(started.id)
  t.same(view.steps.map((s: { state: string }) => s.state), ['failed', 'pending'])
  const property = (await rt.api.get(`/v1/properties/${propertyId}`)).data
  t.same(property.fields, { price: 'on request', draft: true }, 'nothing written')
  t.equal(property.version, 1)
  const mail = rt.smtp.mails.find((m) => m.subject === 'Automatic step failed: "Set the asking price" in "Re-value a property"')
  t.ok(mail, 'the controller is mailed')
  t.match(mail?.text, /askingPrice could not be computed: multiply needs numbers, not "on request"/)

  const done = await rt.api.post(`/v1/process-instances/${started.id}/advance`, { outcome: 'done', note: 'Priced by hand' })
  t.equal(done.statusCode, 200, done.body)
  view = done.data
  t.same(view.steps.map((s: { state: string }) => s.state), ['done', 'due'])
})

t.test('values that would outgrow the record\'s limits write nothing and fail the step', async (t) => {
  const templateId = await rt.template([{
    kind: 'writeValues', name: 'Copy the description', refersTo: { property: true },
    writeValues: { values: [{ record: 'property', field: 'copy', value: { field: 'property.text' } }] }
  }])
  const propertyId = await newProperty({ text: 'x'.repeat(200 * 1024) })
  const started = await rt.start(templateId, { propertyId })
  await rt.scheduler.runOnce()
  const view = await rt.instance(started.id)
  t.equal(view.steps[0].state, 'failed')
  t.match((await rt.api.get(`/v1/process-instances/${started.id}/activities?limit=100`)).data.items, [{ kind: 'automaticStepFailed', message: /fields would take more than 262144 bytes/ }])
})

t.test('two workers at once write each step\'s values once', async (t) => {
  const templateId = await rt.template([writeStep])
  const propertyIds = await Promise.all([1, 2, 3, 4].map((n) => newProperty({ price: n * 100000 })))
  const started = await Promise.all(propertyIds.map((propertyId) => rt.start(templateId, { propertyId })))
  const runs = await Promise.all([rt.scheduler.runOnce(), rt.newScheduler().runOnce()])
  t.equal(runs[0].automaticSteps + runs[1].automaticSteps, 4, 'each step ran once')
  for (const [i, propertyId] of propertyIds.entries()) {
    const property = (await rt.api.get(`/v1/properties/${propertyId}`)).data
    t.equal(property.version, 2, 'one write')
    t.equal(property.fields.status, 'listed')
    const activities = (await rt.api.get(`/v1/properties/${propertyId}/activities?limit=100`)).data.items
    t.equal(activities.filter((a: { kind: string }) => a.kind === 'recordUpdatedByProcess').length, 1)
    t.equal((await rt.instance(started[i].id)).status, 'completed')
  }
  const deliveries = (await rt.api.get('/v1/deliveries?limit=200')).data.items
    .filter((d: { propertyId: string; source: string }) => propertyIds.includes(d.propertyId) && d.source === 'trigger')
  t.equal(deliveries.length, 4, 'one trigger delivery per write')
})

/**
 * Runs two workers' batches of two due steps each, the processes' steps due in the order given,
 * while a third transaction holds `held`: both workers are let go once both wait for a lock. Returns
 * each worker's count of steps carried out, or its error.
 */
async function crossingBatches(processes: { templateId: string; link: Record<string, string> }[], held: { table: 'properties' | 'addresses'; id: string }) {
  const started = []
  for (const { templateId, link } of processes) started.push(await rt.start(templateId, link))
  for (const [i, process] of started.entries()) {
    await rt.db.updateTable('instance_steps').set({ start_at: new Date(rt.clock.now().getTime() - (started.length - i) * 1000) }).where('id', '=', process.steps[0].id).execute()
  }
  let release!: () => void
  let holding!: () => void
  const locked = new Promise<void>((resolve) => { holding = resolve })
  const holder = rt.db.transaction().execute(async (trx) => {
    await sql`select id from ${sql.table(held.table)} where id = ${held.id} for update`.execute(trx)
    holding()
    await new Promise<void>((resolve) => { release = resolve })
  })
  await locked
  // The batches take the oldest steps first: the first worker's two stand before the second's.
  const first = runAutomaticSteps(rt.db, rt.clock.now(), 2)
  await waitForLockWait(rt.db, 1)
  const second = runAutomaticSteps(rt.db, rt.clock.now(), 2)
  await waitForLockWait(rt.db, 2)
  release()
  await holder
  const runs = (await Promise.allSettled([first, second])).map((run) => (run.status === 'fulfilled' ? run.value : String(run.reason)))
  const statuses = await Promise.all(started.map(async (process) => (await rt.instance(process.id)).status))
  return { runs, statuses }
}

t.test('two workers whose batches write the same records in crossing order both finish, neither deadlocked', async (t) => {
  // The first batch writes property one, then two; the second two, then one. Property one is held,
  // so the first waits for it and the second has written two when it comes to one.
  const templateId = await rt.template([{
    kind: 'writeValues', name: 'List it', refersTo: { property: true },
    writeValues: { values: [{ record: 'property', field: 'status', value: 'listed' }] }
  }])
  const [one, two] = await Promise.all([newProperty({ price: 1 }), newProperty({ price: 2 })])
  const { runs, statuses } = await crossingBatches([one, two, two, one].map((propertyId) => ({ templateId, link: { propertyId } })), { table: 'properties', id: one })
  t.same(runs, [2, 2], 'each worker carried out its two steps')
  t.same(statuses, ['completed', 'completed', 'completed', 'completed'])
})

t.test('steps that write a property and an address, named in either order, lock them in one order', async (t) => {
  const step = (records: ('property' | 'address')[]) => ({
    kind: 'writeValues', name: 'Mark both', refersTo: { property: true, address: true },
    writeValues: { values: records.map((record) => ({ record, field: 'marked', value: true })) }
  })
  const propertyFirst = await rt.template([step(['property', 'address'])])
  const addressFirst = await rt.template([step(['address', 'property'])])
  const propertyId = await newProperty({ price: 3 })
  const addressId = (await rt.api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { name: 'Owner' } })).data.id as string
  // The property is held: the first batch waits for it, the second has locked the address when it comes to it.
  const { runs, statuses } = await crossingBatches([propertyFirst, propertyFirst, addressFirst, addressFirst]
    .map((templateId) => ({ templateId, link: { propertyId, addressId } })), { table: 'properties', id: propertyId })
  t.same(runs, [2, 2], 'each worker carried out its two steps')
  t.same(statuses, ['completed', 'completed', 'completed', 'completed'])
})

t.test('records a batch or a PATCH holds for its write do not hold up a start naming them (its foreign-key check)', async (t) => {
  const propertyId = await newProperty({ price: 4 })
  const addressId = (await rt.api.post('/v1/addresses', { maintainerUserId: rt.worker.id, fields: { name: 'Owner' } })).data.id as string
  const tenantId = rt.tenant.id
  // What a start's foreign-key checks take, without waiting: 55P03 if the write's lock conflicts.
  const keyShare = (table: 'properties' | 'addresses', id: string) =>
    sql`select id from ${sql.table(table)} where tenant_id = ${tenantId} and id = ${id} for key share nowait`.execute(rt.db).then(() => 'free', (error: { code?: string }) => error.code)
  const whileHeld = (lock: (trx: typeof rt.db) => Promise<unknown>) => rt.db.transaction().execute(async (trx) => {
    await lock(trx)
    return [await keyShare('properties', propertyId), await keyShare('addresses', addressId)]
  })
  t.same(await whileHeld((trx) => lockRecordsInOrder(trx, [
    { table: 'addresses', tenant_id: tenantId, id: addressId }, { table: 'properties', tenant_id: tenantId, id: propertyId }
  ])), ['free', 'free'], 'a writeValues batch\'s locks')
  t.same(await whileHeld((trx) => patchRecord(trx, 'properties', tenantId, propertyId, { fields: { set: { price: 5 }, remove: [] }, now: rt.clock.now() })),
    ['free', 'free'], 'a record PATCH\'s lock')
})

t.test('a text value with placeholders is rendered as an email step\'s text is; an unknown placeholder is refused at save', async (t) => {
  const templateId = await rt.template([{
    kind: 'writeValues', name: 'Note the valuation', refersTo: { property: true },
    writeValues: { values: [{ record: 'property', field: 'note', value: 'Valued at {{property.fields.price}} EUR for {{tenant.name}} ({{process.templateName}})' }] }
  }])
  const propertyId = await newProperty({ price: 512000 })
  await rt.start(templateId, { propertyId })
  await rt.scheduler.runOnce()
  const property = (await rt.api.get(`/v1/properties/${propertyId}`)).data
  t.equal(property.fields.note, 'Valued at 512000 EUR for Muster Immobilien (Re-value a property)')

  const draft = (await rt.api.post('/v1/process-templates', { name: 'Bad placeholder', controllerUserId: rt.controller.id })).data
  const refused = await rt.api.post(`/v1/process-templates/${draft.id}/steps`, {
    kind: 'writeValues', name: 'Note', refersTo: { property: true },
    writeValues: { values: [{ record: 'property', field: 'note', value: 'For {{owner.name}}' }] }
  })
  t.equal(refused.statusCode, 422, refused.body)
  t.match(refused.data.errors, [{ pointer: '/body/writeValues/values/0/value' }])
})

t.test('a rendered text value longer than 500 characters is cut between characters, never inside one', async (t) => {
  // 'a' and then emoji (two UTF-16 units each): a cut at 500 units used to keep half of the 250th
  // emoji, which jsonb refuses, so the step failed with "an internal error" and wrote nothing.
  const templateId = await rt.template([{
    kind: 'writeValues', name: 'Copy the title', refersTo: { property: true },
    writeValues: { values: [{ record: 'property', field: 'copy', value: '{{property.fields.title}}' }] }
  }])
  const propertyId = await newProperty({ title: 'a' + '😀'.repeat(300) })
  const started = await rt.start(templateId, { propertyId })
  await rt.scheduler.runOnce()
  t.equal((await rt.instance(started.id)).steps[0].state, 'done')
  const property = (await rt.api.get(`/v1/properties/${propertyId}`)).data
  t.equal(property.fields.copy, 'a' + '😀'.repeat(249), 'cut to 499 units, the whole emoji before the cut kept')
})

t.test('a field named __proto__, which a record refuses, is refused at save; one saved before fails the step instead of writing nothing', async (t) => {
  const protoValue = { record: 'property', field: '__proto__', value: { literal: { a: 1 } } }
  const step = { kind: 'writeValues', name: 'Poison', refersTo: { property: true }, writeValues: { values: [{ record: 'property', field: 'note', value: 'kept' }, protoValue] } }
  const templateId = await rt.template([{ kind: 'task', name: 'First' }])
  const saved = await rt.api.post(`/v1/process-templates/${templateId}/steps`, step)
  t.equal(saved.statusCode, 422, saved.body)
  t.same(saved.data.errors, [{ pointer: '/body/writeValues/values/1/field', detail: '__proto__ cannot be a field: a record refuses it (a PATCH with it answers 400)' }])
  const record = await rt.api.post('/v1/properties', '{"fields":{"__proto__":{"a":1}}}', { 'content-type': 'application/json' })
  t.equal(record.statusCode, 400, 'as a record refuses the key')

  // A step saved before the check: its instance step is given the name as it was stored.
  const before = await rt.template([{ ...step, writeValues: { values: [step.writeValues.values[0]!, { ...protoValue, field: 'legacy' }] } }])
  const propertyId = await newProperty({ price: 1 })
  const started = await rt.start(before, { propertyId })
  await rt.db.updateTable('instance_steps').set({ settings: JSON.stringify(step.writeValues) }).where('id', '=', started.steps[0].id).execute()
  await rt.scheduler.runOnce()
  const view = await rt.instance(started.id)
  t.equal(view.steps[0].state, 'failed', 'the step fails into a manual one, not done having written nothing')
  t.match((await rt.api.get(`/v1/process-instances/${started.id}/activities?limit=100`)).data.items, [{ kind: 'automaticStepFailed', message: /cannot write a field named __proto__/ }])
  const property = (await rt.api.get(`/v1/properties/${propertyId}`)).data
  t.same(property.fields, { price: 1 }, 'nothing written')
  t.equal(({} as Record<string, unknown>).a, undefined, 'no prototype was touched')
})


t.test('a field name with a comma is refused at save, as a record refuses it', async (t) => {
  const templateId = await rt.template([{ kind: 'task', name: 'First' }])
  const saved = await rt.api.post(`/v1/process-templates/${templateId}/steps`, {
    kind: 'writeValues', name: 'Ambiguous', refersTo: { property: true },
    writeValues: { values: [{ record: 'property', field: 'price,rent', value: { literal: 1 } }] }
  })
  t.equal(saved.statusCode, 422, saved.body)
  t.same(saved.data.errors, [{ pointer: '/body/writeValues/values/0/field', detail: 'price,rent cannot be a field: a field name may not contain a comma' }])
})
