import t from 'tap'
import { sql } from '../../../src/db/kysely.js'
import { setupApp } from '../../helpers/app.js'
import { assertProblem } from '../../helpers/assertions.js'
import { waitForLockWait } from '../../helpers/database.js'
import { addParameter, addTaskStep, createService, createTemplate, createUser, valuationService } from './fixtures.js'

// One app and database for the file: each test works in tenants of its own.
const ctx = await setupApp(t)

const MISSING = '00000000-0000-4000-8000-000000000000'
const names = (steps: { name: string }[]) => steps.map((s) => s.name)
const positions = (steps: { position: number }[]) => steps.map((s) => s.position)

t.test('steps: add, insert, read, list, update, delete', async (t) => {
  const tenant = await ctx.newTenant()
  const { client } = tenant
  const serviceId = await valuationService(ctx.db, tenant.id)
  const user = await createUser(client)
  const id = await createTemplate(client)
  const steps = `/v1/process-templates/${id}/steps`

  const task = await client.post(steps, { kind: 'task', name: 'Call the owner' })
  t.equal(task.statusCode, 201)
  t.equal(task.headers.etag, '"1"')
  t.same(task.data, {
    id: task.data.id, templateId: id, position: 1, kind: 'task', name: 'Call the owner', start: { mode: 'afterPrevious' },
    responsibility: 'processResponsible', deadlineDays: null, refersTo: { property: false, address: false },
    serviceId: null, target: null, parameters: {}, version: 1,
    email: null, writeValues: null, decision: null, followUp: null
  })

  const webhook = await client.post(steps, {
    kind: 'webhook', name: 'Value it', serviceId, parameters: { mode: 'full' }, start: { mode: 'daysAfterPrevious', days: 2 },
    responsibility: { user }, deadlineDays: 5, refersTo: { property: true, address: true }
  })
  t.equal(webhook.statusCode, 201)
  t.match(webhook.data, {
    position: 2, serviceId, parameters: { mode: 'full', rooms: 3 }, start: { mode: 'daysAfterPrevious', days: 2 },
    responsibility: { user }, deadlineDays: 5, refersTo: { property: true, address: true }
  })

  const first = await client.post(steps, { kind: 'task', name: 'Prepare', position: 1, responsibility: 'addressMaintainer', refersTo: { address: true } })
  t.equal(first.data.position, 1)
  const list = await client.get(steps)
  t.equal(list.statusCode, 200)
  t.same(names(list.data.items), ['Prepare', 'Call the owner', 'Value it'])
  t.same(positions(list.data.items), [1, 2, 3])
  t.equal(list.data.nextCursor, null)
  t.same(names((await client.get(`/v1/process-templates/${id}`)).data.steps), ['Prepare', 'Call the owner', 'Value it'])

  const page = await client.get(`${steps}?limit=2`)
  t.same(names(page.data.items), ['Prepare', 'Call the owner'])
  t.same(names((await client.get(`${steps}?limit=2&cursor=${page.data.nextCursor}`)).data.items), ['Value it'])

  const one = await client.get(`${steps}/${webhook.data.id}`)
  t.equal(one.data.position, 3)
  t.equal(one.headers.etag, '"2"', 'moved from 2 to 3 by the insert before it')

  const renamed = await client.patch(`${steps}/${webhook.data.id}`, { name: 'Value the property', parameters: { mode: 'quick', rooms: 4 } }, { 'if-match': '"2"' })
  t.equal(renamed.statusCode, 200)
  t.match(renamed.data, { name: 'Value the property', parameters: { mode: 'quick', rooms: 4 }, version: 3, position: 3 })
  t.equal(renamed.headers.etag, '"3"')
  const partial = await client.patch(`${steps}/${webhook.data.id}`, { refersTo: { address: false } })
  t.same(partial.data.refersTo, { property: true, address: false }, 'refersTo merges flag by flag')

  const toTask = await client.patch(`${steps}/${webhook.data.id}`, { kind: 'task', serviceId: null, parameters: {}, responsibility: 'processResponsible' })
  t.match(toTask.data, { kind: 'task', serviceId: null, parameters: {}, responsibility: 'processResponsible' })

  t.equal((await client.delete(`${steps}/${task.data.id}`)).statusCode, 204)
  const after = (await client.get(steps)).data.items
  t.same(names(after), ['Prepare', 'Value the property'])
  t.same(positions(after), [1, 2], 'the gap is closed')
  t.same(names((await client.get(`${steps}?limit=2&cursor=${page.data.nextCursor}`)).data.items), ['Value the property'], 'the page after a deleted step goes on')
  assertProblem(t, await client.get(`${steps}/${task.data.id}`), 404)
  assertProblem(t, await client.get(`/v1/process-templates/${MISSING}/steps`), 404)
  assertProblem(t, await client.post(`/v1/process-templates/${MISSING}/steps`, { kind: 'task', name: 'x' }), 404)
  assertProblem(t, await client.patch(`${steps}/${MISSING}`, { name: 'x' }), 404)
  assertProblem(t, await client.delete(`${steps}/${MISSING}`), 404)
})

t.test('a steps page goes on after the last step of the page before, also when that step was deleted', async (t) => {
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client)
  const steps = `/v1/process-templates/${id}/steps`
  const ids: string[] = []
  for (const name of ['One', 'Two', 'Three', 'Four', 'Five']) ids.push(await addTaskStep(client, id, name))

  const first = await client.get(`${steps}?limit=2`)
  t.same(names(first.data.items), ['One', 'Two'])
  t.equal((await client.delete(`${steps}/${ids[1]}`)).statusCode, 204)
  const second = await client.get(`${steps}?limit=2&cursor=${first.data.nextCursor}`)
  t.equal(second.statusCode, 200)
  t.same(names(second.data.items), ['Three', 'Four'], 'the step after the deleted one moved into its place and comes next')

  await client.post(steps, { kind: 'task', name: 'Zero', position: 1 })
  const third = await client.get(`${steps}?limit=2&cursor=${second.data.nextCursor}`)
  t.same(names(third.data.items), ['Five'], 'a step added before the cursor\'s step moves the place with it')
  t.equal(third.data.nextCursor, null)

  const other = await createTemplate(client)
  await addTaskStep(client, other, 'Elsewhere')
  assertProblem(t, await client.get(`/v1/process-templates/${other}/steps?cursor=${first.data.nextCursor}`), 400, /\/querystring\/cursor.*does not belong to this list/)
  assertProblem(t, await client.get(`${steps}?cursor=${Buffer.from('v2:nonsense').toString('base64url')}`), 400, /\/querystring\/cursor/)
  const formerKind = Buffer.from(`v1:${ids[1]}`).toString('base64url')
  assertProblem(t, await client.get(`${steps}?cursor=${formerKind}`), 400, /\/querystring\/cursor.*stale cursor/)
})

t.test('a steps page whose last step was deleted goes on at the step that came next, whatever changed before it', async (t) => {
  const { client } = await ctx.newTenant()
  /** A template with steps One to Five, its first page of two steps, and the steps' ids. */
  const paged = async () => {
    const id = await createTemplate(client)
    const ids: string[] = []
    for (const name of ['One', 'Two', 'Three', 'Four', 'Five']) ids.push(await addTaskStep(client, id, name))
    const steps = `/v1/process-templates/${id}/steps`
    const first = await client.get(`${steps}?limit=2`)
    t.same(names(first.data.items), ['One', 'Two'])
    return { steps, ids, next: `${steps}?limit=2&cursor=${first.data.nextCursor}` }
  }

  const moved = await paged()
  // The page's last step and the one before it are deleted: Three moves up two places.
  for (const deleted of [moved.ids[1], moved.ids[0]]) t.equal((await client.delete(`${moved.steps}/${deleted}`)).statusCode, 204)
  const afterDeletes = await client.get(moved.next)
  t.equal(afterDeletes.statusCode, 200, afterDeletes.body)
  t.same(names(afterDeletes.data.items), ['Three', 'Four'], 'Three, there throughout, is not skipped')

  const shifted = await paged()
  // The page's last step is deleted and a step is added at the top: Three stays where it was.
  t.equal((await client.delete(`${shifted.steps}/${shifted.ids[1]}`)).statusCode, 204)
  t.equal((await client.post(shifted.steps, { kind: 'task', name: 'Zero', position: 1 })).statusCode, 201)
  const afterInsert = await client.get(shifted.next)
  t.equal(afterInsert.statusCode, 200, afterInsert.body)
  t.same(names(afterInsert.data.items), ['Three', 'Four'], 'One, on the page before, does not come again')

  const gone = await paged()
  // Both the page's last step and the one that came next are deleted (two neighbours removed): it goes on
  // from the last step's former place, where Four moved up to.
  for (const deleted of [gone.ids[1], gone.ids[2]]) t.equal((await client.delete(`${gone.steps}/${deleted}`)).statusCode, 204)
  const afterBoth = await client.get(gone.next)
  t.equal(afterBoth.statusCode, 200, afterBoth.body)
  t.same(names(afterBoth.data.items), ['Four', 'Five'], 'Four, there throughout, is not skipped')
})

// The template's answer holds its steps, so any change to one moves the template's version (its ETag):
// a client polling the template with If-None-Match sees a step's edit instead of a 304.
t.test('every step change bumps the template version; a step edit bumps the step too', async (t) => {
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client)
  const stepId = await addTaskStep(client, id, 'One')
  const before = await client.get(`/v1/process-templates/${id}`)
  t.equal(before.data.version, 2)
  const edited = await client.patch(`/v1/process-templates/${id}/steps/${stepId}`, { name: 'Uno' })
  t.equal(edited.data.version, 2, 'the step\'s own version')
  const polled = await client.get(`/v1/process-templates/${id}`, { 'if-none-match': before.headers.etag as string })
  t.equal(polled.statusCode, 200, 'the copy held before the edit is not current')
  t.equal(polled.data.version, 3)
  t.equal(polled.data.steps[0].name, 'Uno')
  t.equal((await client.get(`/v1/process-templates/${id}`, { 'if-none-match': polled.headers.etag as string })).statusCode, 304)
  // An edit that changes nothing changes no version.
  await client.patch(`/v1/process-templates/${id}/steps/${stepId}`, { name: 'Uno' })
  t.equal((await client.get(`/v1/process-templates/${id}`)).data.version, 3)
})

// A step's answer shows its position: a step that an insert, a delete or a reorder moves has a new
// version, or a client polling it with If-None-Match would be told its copy is current (304) when it is not.
t.test('a step that moves to another position has a new version', async (t) => {
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client)
  const steps = `/v1/process-templates/${id}/steps`
  const [a, b, c] = [await addTaskStep(client, id, 'A'), await addTaskStep(client, id, 'B'), await addTaskStep(client, id, 'C')]
  const held = async (stepId: string) => {
    const got = await client.get(`${steps}/${stepId}`)
    return { etag: got.headers.etag as string, position: got.data.position as number, version: got.data.version as number }
  }
  const polled = (stepId: string, etag: string) => client.get(`${steps}/${stepId}`, { 'if-none-match': etag })

  // A reorder: A and C swap places, B stays where it is.
  const [beforeA, beforeB, beforeC] = [await held(a), await held(b), await held(c)]
  t.equal((await client.put(`${steps}/order`, { stepIds: [c, b, a] })).statusCode, 200)
  const movedA = await polled(a, beforeA.etag)
  t.equal(movedA.statusCode, 200, 'the copy held before the reorder is not current')
  t.match(movedA.data, { position: 3, version: beforeA.version + 1 })
  t.equal(movedA.headers.etag, `"${beforeA.version + 1}"`)
  t.equal((await polled(c, beforeC.etag)).statusCode, 200)
  t.equal((await polled(b, beforeB.etag)).statusCode, 304, 'a step that kept its place keeps its version')
  assertProblem(t, await client.patch(`${steps}/${a}`, { name: 'A2' }, { 'if-match': beforeA.etag }), 412)

  // An insert before it, and a delete before it.
  const beforeInsert = await held(b)
  const inserted = await addTaskStep(client, id, 'Intake', { position: 1 })
  t.match((await polled(b, beforeInsert.etag)).data, { position: 3, version: beforeInsert.version + 1 })
  const beforeDelete = await held(b)
  t.equal((await client.delete(`${steps}/${inserted}`)).statusCode, 204)
  t.match((await polled(b, beforeDelete.etag)).data, { position: 2, version: beforeDelete.version + 1 })
  // A step after the insert's place has a new version; one before it keeps its own.
  const first = await held(c)
  await addTaskStep(client, id, 'Last')
  t.equal((await polled(c, first.etag)).statusCode, 304)

  // A decision that an insert moves, its branch moving with it: one change, one version on.
  const decision = (await client.post(steps, {
    kind: 'decision', name: 'Priced?', refersTo: { property: true }, position: 2,
    decision: { mode: 'automatic', condition: { exists: { field: 'property.price' } }, yes: 4, no: null }
  })).data
  const beforeBoth = await held(decision.id as string)
  await addTaskStep(client, id, 'Before all', { position: 1 })
  const both = await polled(decision.id as string, beforeBoth.etag)
  t.match(both.data, { position: 3, version: beforeBoth.version + 1, decision: { yes: 5 } }, 'its place and its branch moved, its version once')
})

t.test('step requests that fail their schema answer 400', async (t) => {
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client)
  const steps = `/v1/process-templates/${id}/steps`
  const stepId = await addTaskStep(client, id, 'One')
  assertProblem(t, await client.post(steps, { name: 'x' }), 400, /kind/)
  assertProblem(t, await client.post(steps, { kind: 'fax', name: 'x' }), 400, /kind/)
  assertProblem(t, await client.post(steps, { kind: 'task', name: 'x', start: { mode: 'daysAfterPrevious' } }), 400, /start/)
  assertProblem(t, await client.post(steps, { kind: 'task', name: 'x', start: { mode: 'daysAfterPrevious', days: -1 } }), 400, /start/)
  assertProblem(t, await client.post(steps, { kind: 'task', name: 'x', deadlineDays: 0 }), 400, /deadlineDays/)
  assertProblem(t, await client.post(steps, { kind: 'task', name: 'x', responsibility: 'anyone' }), 400, /responsibility/)
  assertProblem(t, await client.post(steps, { kind: 'task', name: 'x', responsibility: { user: 'anna' } }), 400, /responsibility/)
  assertProblem(t, await client.post(steps, { kind: 'task', name: 'x', position: 0 }), 400, /position/)
  assertProblem(t, await client.post(steps, { kind: 'task', name: 'x', parameters: [] }), 400, /parameters/)
  assertProblem(t, await client.post(steps, { kind: 'task', name: 'x', extra: 1 }), 400, /extra/)
  assertProblem(t, await client.post(steps, { kind: 'task', name: 'a\u0000' }), 400, /\/body\/name/)
  const emptyField = { values: [{ record: 'property', field: '', value: { literal: 1 } }] }
  const writesNoField = await client.post(steps, { kind: 'writeValues', name: 'x', refersTo: { property: true }, writeValues: emptyField })
  assertProblem(t, writesNoField, 400)
  t.same(writesNoField.data.errors, [{ pointer: '/body/writeValues/values/0/field', detail: 'must not be empty' }], 'an empty field name is no field')
  assertProblem(t, await client.patch(`${steps}/${stepId}`, {}), 400)
  assertProblem(t, await client.patch(`${steps}/${stepId}`, { position: 2 }), 400, /position/)
  assertProblem(t, await client.get(`${steps}/not-a-uuid`), 400)
  assertProblem(t, await client.put(`${steps}/order`, { stepIds: ['x'] }), 400, /stepIds/)
  assertProblem(t, await client.put(`${steps}/order`, {}), 400, /stepIds/)
})

t.test('a value that fails a union gets one clear error: the null branch says nothing, the other shapes are named once', async (t) => {
  const { client } = await ctx.newTenant()
  const steps = `/v1/process-templates/${await createTemplate(client)}/steps`
  const errors = async (body: object) => (await client.post(steps, { kind: 'task', name: 'x', ...body })).data.errors
  t.same(await errors({ deadlineDays: 0 }), [{ pointer: '/body/deadlineDays', detail: 'must be at least 1' }])
  t.same(await errors({ deadlineDays: 'soon' }), [{ pointer: '/body/deadlineDays', detail: 'must be an integer or null' }])
  t.same(await errors({ target: { url: 'https://x.example/hook' } }), [{ pointer: '/body/target/secret', detail: '"secret" is required' }])
  t.same(await errors({ responsibility: 'anyone' }),
    [{ pointer: '/body/responsibility', detail: 'must be "processResponsible", "propertyMaintainer", "addressMaintainer" or an object' }])
  t.same(await errors({ responsibility: { user: 'anna' } }), [{ pointer: '/body/responsibility/user', detail: 'must be a UUID such as 01a2253b-4a10-7e2f-8c3b-7d9e1f2a4b56 (format "uuid")' }], 'the branch it meant')
  t.same(await errors({ start: { mode: 'daysAfterPrevious' } }), [{ pointer: '/body/start/days', detail: '"days" is required' }])
  t.same(await errors({ start: { mode: 'later' } }), [{ pointer: '/body/start/mode', detail: 'must be "afterPrevious" or "daysAfterPrevious"' }])
  t.same(await errors({ start: { mode: 'afterPrevious', days: 2 } }), [{ pointer: '/body/start', detail: 'must match one of the shapes the schema allows' }])
})

t.test('a decision\'s nested condition that fails is told where, at its own depth, never with an empty message', async (t) => {
  const { client } = await ctx.newTenant()
  const steps = `/v1/process-templates/${await createTemplate(client)}/steps`
  const errors = async (condition: unknown) =>
    (await client.post(steps, { kind: 'decision', name: 'x', decision: { mode: 'automatic', yes: null, no: null, condition } })).data.errors as { pointer: string; detail: string }[]
  const shapes = 'must match one of the shapes the schema allows'
  const at = '/body/decision/condition'
  // Each nesting level is the same union, reached through a $ref: its errors were grouped as one level's,
  // which left "must be " with nothing after it at some levels and a wrong "must be null" at the top.
  t.same(await errors({ not: { not: { not: { bogus: 1 } } } }), [{ pointer: `${at}/not/not/not`, detail: shapes }])
  t.same(await errors({ eq: [{ step: 0, of: 'x' }, { today: { plusDays: 'a' } }] }),
    [{ pointer: `${at}/eq/0`, detail: shapes }, { pointer: `${at}/eq/1/today/plusDays`, detail: 'must be an integer' }])
  t.same(await errors({ and: [{ x: 1 }, { x: 2 }] }), [{ pointer: `${at}/and/0`, detail: shapes }, { pointer: `${at}/and/1`, detail: shapes }])
  t.same(await errors([]), [{ pointer: at, detail: 'must be a string, a number, a boolean, an object or null' }])
})

t.test('a parameter of none of the types a parameter takes is told them all', async (t) => {
  const { client } = await ctx.newTenant()
  const steps = `/v1/process-templates/${await createTemplate(client)}/steps`
  const answered = await client.post(steps, { kind: 'task', name: 'x', parameters: { rooms: { count: 3 } } })
  assertProblem(t, answered, 400)
  t.same(answered.data.errors, [{ pointer: '/body/parameters/rooms', detail: 'must be a string, a number or a boolean' }])
})

t.test('step rules beyond the schema answer 422 at the field', async (t) => {
  const tenant = await ctx.newTenant()
  const { client } = tenant
  const serviceId = await valuationService(ctx.db, tenant.id)
  const id = await createTemplate(client)
  const steps = `/v1/process-templates/${id}/steps`
  const webhook = (extra: Record<string, unknown>) => client.post(steps, { kind: 'webhook', name: 'Hook', serviceId, parameters: { mode: 'full' }, ...extra })

  assertProblem(t, await webhook({ serviceId: undefined }), 422, /\/body\/serviceId.*needs the serviceId/)
  assertProblem(t, await webhook({ serviceId: MISSING }), 422, /\/body\/serviceId.*not an active marketplace service/)
  const inactive = await createService(ctx.db, { active: false })
  await ctx.db.insertInto('service_activations').values({ tenant_id: tenant.id, service_id: inactive }).execute()
  assertProblem(t, await webhook({ serviceId: inactive }), 422, /\/body\/serviceId.*not an active marketplace service/)
  const notActivated = await createService(ctx.db)
  assertProblem(t, await webhook({ serviceId: notActivated }), 422, /\/body\/serviceId.*not activated for this tenant/)

  assertProblem(t, await client.post(steps, { kind: 'task', name: 'x', serviceId }), 422, /\/body\/serviceId.*task step calls no service/)
  assertProblem(t, await client.post(steps, { kind: 'task', name: 'x', parameters: { mode: 'full' } }), 422, /\/body\/parameters.*no parameters/)

  assertProblem(t, await webhook({ parameters: { mode: 'full', colour: 'red' } }), 422, /\/body\/parameters\/colour.*not a parameter/)
  assertProblem(t, await webhook({ parameters: { mode: 'slow' } }), 422, /\/body\/parameters\/mode.*one of "full", "quick"/)
  assertProblem(t, await webhook({ parameters: { mode: 'full', rooms: 'three' } }), 422, /\/body\/parameters\/rooms.*integer/)
  assertProblem(t, await webhook({ parameters: {} }), 422, /\/body\/parameters\/mode.*required/)
  const typed = await createService(ctx.db)
  await addParameter(ctx.db, typed, { name: 'note', type: 'string' })
  await addParameter(ctx.db, typed, { name: 'factor', type: 'number' })
  await addParameter(ctx.db, typed, { name: 'dryRun', type: 'boolean' })
  await ctx.db.insertInto('service_activations').values({ tenant_id: tenant.id, service_id: typed }).execute()
  const wrong = await webhook({ serviceId: typed, parameters: { note: 1, factor: 'x', dryRun: 'no' } })
  assertProblem(t, wrong, 422)
  t.same(wrong.data.errors.map((e: { pointer: string }) => e.pointer).sort(), ['/body/parameters/dryRun', '/body/parameters/factor', '/body/parameters/note'])

  assertProblem(t, await client.post(steps, { kind: 'task', name: 'x', responsibility: 'propertyMaintainer' }), 422, /\/body\/responsibility.*refersTo.property/)
  assertProblem(t, await client.post(steps, { kind: 'task', name: 'x', responsibility: 'addressMaintainer', refersTo: { property: true } }), 422, /\/body\/responsibility.*refersTo.address/)
  assertProblem(t, await client.post(steps, { kind: 'task', name: 'x', responsibility: { user: MISSING } }), 422, /\/body\/responsibility\/user.*does not exist/)
  assertProblem(t, await client.post(steps, { kind: 'task', name: 'x', position: 2 }), 422, /\/body\/position.*between 1 and 1/)
  t.same((await client.get(steps)).data.items, [], 'no step was saved')
})

t.test('a step update re-validates the merged step', async (t) => {
  const tenant = await ctx.newTenant()
  const { client } = tenant
  const serviceId = await valuationService(ctx.db, tenant.id)
  const other = await createService(ctx.db, { name: 'Newsletter' })
  await addParameter(ctx.db, other, { name: 'list', type: 'string', required: true })
  await ctx.db.insertInto('service_activations').values({ tenant_id: tenant.id, service_id: other }).execute()
  const id = await createTemplate(client)
  const hook = await client.post(`/v1/process-templates/${id}/steps`, { kind: 'webhook', name: 'Hook', serviceId, parameters: { mode: 'full' }, refersTo: { property: true } })
  const url = `/v1/process-templates/${id}/steps/${hook.data.id}`

  assertProblem(t, await client.patch(url, { serviceId: other }), 422, /\/body\/parameters\/mode.*not a parameter.*\/body\/parameters\/list.*required/)
  t.match((await client.patch(url, { serviceId: other, parameters: { list: 'buyers' } })).data, { serviceId: other, parameters: { list: 'buyers' }, version: 2 })
  assertProblem(t, await client.patch(url, { kind: 'task', serviceId: other }), 422, /\/body\/serviceId.*a task step calls no service/)
  assertProblem(t, await client.patch(url, { refersTo: { property: false }, responsibility: 'propertyMaintainer' }), 422, /\/body\/responsibility/)
  t.equal((await client.patch(url, { responsibility: 'propertyMaintainer' })).statusCode, 200, 'the stored refersTo counts')
  assertProblem(t, await client.patch(url, { refersTo: { property: false } }), 422, /\/body\/responsibility/)
  assertProblem(t, await client.patch(url, { responsibility: { user: MISSING } }), 422, /\/body\/responsibility\/user/)
  t.match((await client.get(url)).data, { serviceId: other, responsibility: 'propertyMaintainer', version: 3 }, 'failed updates changed nothing')
})

t.test('a stale If-Match on a step update or delete answers 412', async (t) => {
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client)
  const stepId = await addTaskStep(client, id, 'One')
  const url = `/v1/process-templates/${id}/steps/${stepId}`
  t.equal((await client.patch(url, { name: 'Two' }, { 'if-match': '"1"' })).statusCode, 200)
  const stale = await client.patch(url, { name: 'Three' }, { 'if-match': '"1"' })
  assertProblem(t, stale, 412, /version 2/)
  t.equal(stale.headers.etag, '"2"', 'a 412 carries the step\'s current ETag')
  assertProblem(t, await client.delete(url, { 'if-match': '"1"' }), 412)
  t.equal((await client.get(url)).data.name, 'Two')
  t.equal((await client.delete(url, { 'if-match': '"2"' })).statusCode, 204)
})

// A position counts in the order the client saw: an insert with If-Match (the template's version, as for
// steps/order) lands only in that order, or answers 412 with the template's current ETag.
t.test('a stale If-Match on a step insert answers 412 and inserts nothing', async (t) => {
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client)
  await addTaskStep(client, id, 'One')
  const seen = (await client.get(`/v1/process-templates/${id}`)).data.version
  await addTaskStep(client, id, 'Two', { position: 1 })
  const url = `/v1/process-templates/${id}/steps`
  const stale = await client.post(url, { kind: 'task', name: 'Before One', position: 1 }, { 'if-match': `"${seen}"` })
  assertProblem(t, stale, 412, new RegExp(`Process template ${id} is at version ${seen + 1}`))
  t.equal(stale.headers.etag, `"${seen + 1}"`, 'a 412 carries the template\'s current ETag')
  const template = await client.get(`/v1/process-templates/${id}`)
  t.same(names(template.data.steps), ['Two', 'One'], 'nothing inserted')
  t.equal(template.data.version, seen + 1)
  const fresh = await client.post(url, { kind: 'task', name: 'Before One', position: 2 }, { 'if-match': template.headers.etag as string })
  t.equal(fresh.statusCode, 201, fresh.body)
  t.same(names((await client.get(`/v1/process-templates/${id}`)).data.steps), ['Two', 'Before One', 'One'])
  assertProblem(t, await client.post(url, { kind: 'task', name: 'x' }, { 'if-match': 'garbage' }), 400, /If-Match/)
  assertProblem(t, await client.post(`/v1/process-templates/${MISSING}/steps`, { kind: 'task', name: 'x' }, { 'if-match': '"1"' }), 404)
})

t.test('two inserts with the same If-Match at once: one is added, the other answers 412', async (t) => {
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client)
  await addTaskStep(client, id, 'One')
  const etag = (await client.get(`/v1/process-templates/${id}`)).headers.etag as string
  const url = `/v1/process-templates/${id}/steps`
  const inserts = await ctx.db.transaction().execute(async (trx) => {
    await sql`select id from process_templates where id = ${id} for update`.execute(trx)
    const both = ['A', 'B'].map((name) => client.post(url, { kind: 'task', name, position: 1 }, { 'if-match': etag }))
    await waitForLockWait(ctx.db, 2)
    return both
  })
  const answers = await Promise.all(inserts)
  t.same(answers.map((r) => r.statusCode).sort(), [201, 412], 'one wins')
  t.equal((await client.get(`/v1/process-templates/${id}`)).data.steps.length, 2)
})

// RFC 9110 13.2.1: a request that would fail without its preconditions (404, the step is gone) fails so
// with them; If-Match is not evaluated. Two deletes of one step take turns on the template's lock, so the
// second answers as a delete sent after the first would.
t.test('two deletes of one step with the same If-Match: the one that waits answers 404, as a later delete does', async (t) => {
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client)
  await addTaskStep(client, id, 'One')
  const url = `/v1/process-templates/${id}/steps/${await addTaskStep(client, id, 'Two')}`
  const deletes = await ctx.db.transaction().execute(async (trx) => {
    await sql`select id from process_templates where id = ${id} for update`.execute(trx)
    const both = [client.delete(url, { 'if-match': '"1"' }), client.delete(url, { 'if-match': '"1"' })]
    await waitForLockWait(ctx.db, 2)
    return both
  })
  const answers = await Promise.all(deletes)
  t.same(answers.map((r) => r.statusCode).sort(), [204, 404], 'one deletes, the other finds the step gone')
  assertProblem(t, await client.delete(url, { 'if-match': '"1"' }), 404, /not found/)
})

t.test('the only step of an active template cannot be deleted', async (t) => {
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client)
  const stepId = await addTaskStep(client, id, 'One')
  await client.patch(`/v1/process-templates/${id}`, { active: true })
  assertProblem(t, await client.delete(`/v1/process-templates/${id}/steps/${stepId}`), 409, /only step/)
})

t.test('a template holds at most 1,000 steps; a larger one of before still copies whole', async (t) => {
  const tenant = await ctx.newTenant()
  const { client } = tenant
  const id = await createTemplate(client)
  const first = await addTaskStep(client, id, 'Step 1')
  // More steps than one statement's 65,535 values could copy at once, added behind the API's back.
  const fill = (count: number, from: number) => sql`
    insert into template_steps (tenant_id, id, template_id, position, kind, name, start_mode, responsibility, refers_to_property,
      refers_to_address, parameters, settings, created_at, updated_at)
    select tenant_id, gen_random_uuid(), template_id, n, kind, 'Step ' || n, start_mode, responsibility, refers_to_property,
      refers_to_address, parameters, settings, created_at, updated_at
    from template_steps, generate_series(${from}::int, ${from + count - 1}::int) n
    where tenant_id = ${tenant.id} and id = ${first}`.execute(ctx.db)
  await fill(999, 2)
  assertProblem(t, await client.post(`/v1/process-templates/${id}/steps`, { kind: 'task', name: 'One too many' }), 409, /1000 steps, as many as a template may have/)
  // About 22 values a step: 4,000 steps are well past the 65,535 values one statement may carry.
  await fill(3000, 1001)
  const copy = await client.post(`/v1/process-templates/${id}/copy`, {})
  t.equal(copy.statusCode, 201, copy.body)
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from template_steps where tenant_id = ${tenant.id} and template_id = ${copy.data.id}`.execute(ctx.db)
  t.equal(rows[0]!.n, 4000, 'every step copied')
})

t.test('a step PATCH that changes nothing keeps the version, the ETag and updatedAt', async (t) => {
  const tenant = await ctx.newTenant()
  const { client } = tenant
  const serviceId = await valuationService(ctx.db, tenant.id)
  const id = await createTemplate(client)
  const created = await client.post(`/v1/process-templates/${id}/steps`, {
    kind: 'webhook', name: 'Value it', serviceId, parameters: { mode: 'full' }, refersTo: { property: true }
  })
  t.same(created.data.parameters, { mode: 'full', rooms: 3 }, 'defaults filled in')
  const url = `/v1/process-templates/${id}/steps/${created.data.id}`
  const storedAt = () => ctx.db.selectFrom('template_steps').select('updated_at').where('id', '=', created.data.id).executeTakeFirstOrThrow()
  const updatedAt = await storedAt()
  const template = (await client.get(`/v1/process-templates/${id}`)).data
  ctx.clock.advance(1000)
  for (const body of [
    { parameters: { mode: 'full' } }, { parameters: { rooms: 3, mode: 'full' } }, { name: 'Value it', kind: 'webhook', serviceId },
    { refersTo: { property: true } }, { deadlineDays: null, start: { mode: 'afterPrevious' }, responsibility: 'processResponsible' }
  ]) {
    const same = await client.patch(url, body, { 'if-match': '"1"' })
    t.equal(same.statusCode, 200, JSON.stringify(body))
    t.same(same.data, created.data, `${JSON.stringify(body)}: the step as it was`)
    t.equal(same.headers.etag, '"1"')
  }
  t.same(await storedAt(), updatedAt, 'updated_at stays')
  t.same((await client.get(`/v1/process-templates/${id}`)).data, template, 'the template is as it was')
  assertProblem(t, await client.patch(url, { name: 'Value it' }, { 'if-match': '"0"' }), 412, /version 1/)
  assertProblem(t, await client.patch(url, { parameters: { mode: 'fast' } }, { 'if-match': '"1"' }), 422, /mode/) // the parameters are still checked
  const changed = await client.patch(url, { parameters: { mode: 'full', rooms: 4 } }, { 'if-match': '"1"' })
  t.same([changed.data.version, changed.headers.etag], [2, '"2"'], 'a change still moves the version')

  // A target's secret is write-only and sealed: sending one is a change, even the same.
  const target = { url: 'https://crm.muster.example/hooks/baton', secret: 'whsec_Hq3mZ8vR2nT7yK4pW9sX1cB6dF0gJ5aL' }
  const free = await client.post(`/v1/process-templates/${id}/steps`, { kind: 'webhook', name: 'Tell our CRM', target })
  t.equal(free.statusCode, 201, free.body)
  const freeUrl = `/v1/process-templates/${id}/steps/${free.data.id}`
  t.equal((await client.patch(freeUrl, { name: 'Tell our CRM' }, { 'if-match': '"1"' })).headers.etag, '"1"')
  t.equal((await client.patch(freeUrl, { target }, { 'if-match': '"1"' })).headers.etag, '"2"', 'a secret sent is a secret replaced')
})

// A kind change drops the settings only the former kind has (a webhook's service, target and parameters;
// an email's mail, a writeValues step's values, a decision's branches, a follow-up's template) unless the
// same request gives them; given to a kind that takes none, they are refused with a pointer to each.
t.test('a step that changes its kind drops its former kind\'s settings, for every pair of kinds', async (t) => {
  const tenant = await ctx.newTenant()
  const { client } = tenant
  const serviceId = await valuationService(ctx.db, tenant.id)
  const handover = await createTemplate(client, { name: 'Handover' })
  const id = await createTemplate(client)
  const steps = `/v1/process-templates/${id}/steps`
  const target = { url: 'https://crm.muster.example/hooks/baton', secret: 'whsec_Hq3mZ8vR2nT7yK4pW9sX1cB6dF0gJ5aL', delivery: 'json' }
  const none = { serviceId: null, target: null, parameters: {}, email: null, writeValues: null, decision: null, followUp: null }
  const email = { mode: 'manual', to: 'assignee', subject: 'Hello', body: 'The value is {{property.fields.price}}.' }
  const writeValues = { values: [{ record: 'property', field: 'checked', value: true }] }
  const decision = { mode: 'manual', yes: null, no: null }
  // Each kind's own settings as a request gives them, how the step shows them, and the pointers refusing them elsewhere.
  const kinds = [
    { label: 'webhook (service)', kind: 'webhook', given: { serviceId, parameters: { mode: 'quick' } }, shown: { serviceId, parameters: { mode: 'quick', rooms: 3 } }, pointers: ['/body/parameters', '/body/serviceId'] },
    { label: 'webhook (target)', kind: 'webhook', given: { target, parameters: { list: 'buyers' } }, shown: { target: { url: target.url, delivery: 'json' }, parameters: { list: 'buyers' } }, pointers: ['/body/parameters', '/body/target'] },
    { label: 'task', kind: 'task', given: {}, shown: {}, pointers: [] },
    { label: 'email', kind: 'email', given: { email }, shown: { email }, pointers: ['/body/email'] },
    { label: 'writeValues', kind: 'writeValues', given: { writeValues }, shown: { writeValues }, pointers: ['/body/writeValues'] },
    { label: 'decision', kind: 'decision', given: { decision }, shown: { decision }, pointers: ['/body/decision'] },
    { label: 'followUpProcess', kind: 'followUpProcess', given: { followUp: { templateId: handover } }, shown: { followUp: { templateId: handover, waitForCompletion: false } }, pointers: ['/body/followUp'] }
  ]
  const row = (stepId: string) => ctx.db.selectFrom('template_steps').select(['service_id', 'target_url', 'target_secret', 'parameters', 'settings'])
    .where('id', '=', stepId).executeTakeFirstOrThrow()

  for (const from of kinds) {
    for (const to of kinds.filter((k) => k.kind !== from.kind)) {
      const pair = `${from.label} -> ${to.label}`
      const created = await client.post(steps, { kind: from.kind, name: pair, refersTo: { property: true }, ...from.given })
      t.equal(created.statusCode, 201, `${pair}: ${created.body}`)
      t.match(created.data, { kind: from.kind, ...none, ...from.shown })
      const url = `${steps}/${created.data.id}`
      const template = await client.get(`/v1/process-templates/${id}`)

      if (from.pointers.length > 0) {
        const refused = await client.patch(url, { kind: to.kind, ...to.given, ...from.given }, { 'if-match': '"1"' })
        assertProblem(t, refused, 422)
        t.same(refused.data.errors.map((e: { pointer: string }) => e.pointer).sort(), from.pointers, `${pair}: the former kind's settings sent along are refused where they are`)
        t.match(refused.data.errors[0].detail, new RegExp(`a[n]? ${to.kind} step`), `${pair}: the error names the new kind`)
      }

      const changed = await client.patch(url, { kind: to.kind, ...to.given }, { 'if-match': '"1"' })
      t.equal(changed.statusCode, 200, `${pair}: ${changed.body}`)
      t.same(changed.data, { ...created.data, kind: to.kind, ...none, ...to.shown, version: 2 }, `${pair}: only the new kind's settings are shown`)
      t.equal(changed.headers.etag, '"2"', `${pair}: the step's ETag moves`)
      t.equal((await client.get(url, { 'if-none-match': '"1"' })).statusCode, 200, `${pair}: the step held before is not current`)
      const polled = await client.get(`/v1/process-templates/${id}`, { 'if-none-match': template.headers.etag as string })
      t.equal(polled.statusCode, 200, `${pair}: the template held before is not current`)
      t.equal(polled.data?.version, template.data.version + 1)

      const stored = await row(created.data.id)
      t.equal(stored.service_id, to.label === 'webhook (service)' ? serviceId : null, `${pair}: service_id`)
      t.equal(stored.target_url, to.label === 'webhook (target)' ? target.url : null, `${pair}: target_url`)
      if (to.label === 'webhook (target)') t.ok(stored.target_secret, `${pair}: the new target has its secret`)
      else t.equal(stored.target_secret, null, `${pair}: no secret lingers in the row`)
      t.same(stored.parameters, to.kind === 'webhook' ? to.shown.parameters : {}, `${pair}: parameters`)
      t.same(stored.settings, ['task', 'webhook'].includes(to.kind) ? {} : Object.values(to.shown)[0], `${pair}: settings hold the new kind's only`)
    }
  }
})

t.test('a step\'s name of whitespace only answers 422 at /body/name, on create and update', async (t) => {
  const { client } = await ctx.newTenant()
  const id = await createTemplate(client)
  const stepId = await addTaskStep(client, id, 'One')
  for (const name of [' ', '\t\n', '\u00a0\u3000']) {
    for (const response of [
      await client.post(`/v1/process-templates/${id}/steps`, { kind: 'task', name }),
      await client.patch(`/v1/process-templates/${id}/steps/${stepId}`, { name })
    ]) {
      assertProblem(t, response, 422, /may not be blank/)
      t.same(response.data.errors, [{ pointer: '/body/name', detail: 'must not be blank (whitespace only)' }], JSON.stringify(name))
    }
  }
  t.same(names((await client.get(`/v1/process-templates/${id}/steps`)).data.items), ['One'], 'unchanged, no step added')
})
