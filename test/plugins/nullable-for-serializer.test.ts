import t from 'tap'
import { Type } from 'typebox'
import { SerializerSelector } from '@fastify/fast-json-stringify-compiler'
import { nullableRoute, nullableShared } from '../../src/plugins/nullable-for-serializer.js'
import { buildSerializer } from '../../src/plugins/validation.js'
import { ExpressionSchema } from '../../src/modules/templates/expressions/schema.js'
import { DeliverySummarySchema, InstanceSchema, InstanceStepSchema, InstanceSummarySchema } from '../../src/modules/instances/schemas.js'
import { StringEnum, Timestamp } from '../../src/schemas/common.js'

const SHARED = Object.fromEntries([ExpressionSchema, DeliverySummarySchema, InstanceStepSchema, InstanceSummarySchema, InstanceSchema]
  .map((schema) => [(schema as unknown as { $id: string }).$id, schema]))
const route = (schema: unknown) => ({ schema, method: 'GET', url: '/', httpStatus: '200' }) as Parameters<ReturnType<ReturnType<typeof SerializerSelector>>>[0]
const OPTIONS = {} as Parameters<ReturnType<typeof SerializerSelector>>[1]

t.test('"X or null" becomes nullable X, with the union\'s own keywords; other unions stay', async (t) => {
  const shared = { DeliverySummary: DeliverySummarySchema, ProcessExpression: ExpressionSchema }
  const given = Type.Object({
    at: Type.Union([Timestamp, Type.Null()], { description: 'When' }),
    count: Type.Union([Type.Null(), Type.Integer()]),
    list: Type.Array(Type.Union([Type.String(), Type.Null()])),
    delivery: Type.Union([Type.Ref('DeliverySummary'), Type.Null()]),
    expression: Type.Union([Type.Ref('ProcessExpression'), Type.Null()]),
    unknown: Type.Union([Type.Ref('Elsewhere'), Type.Null()]),
    either: Type.Union([Type.String(), Type.Integer(), Type.Null()]),
    nested: Type.Union([Type.Union([Type.String(), Type.Integer()]), Type.Null()]),
    withDefault: Type.Union([Type.Integer({ default: 0 }), Type.Null()]),
    unionDefault: Type.Union([Type.String(), Type.Null()], { default: null }),
    data: Type.Unsafe({ type: 'object', default: { anyOf: [{ type: 'string' }, { type: 'null' }] } })
  })
  const copy = structuredClone(given)
  const schema = nullableRoute(given, shared, new Set()) as unknown as { properties: Record<string, Record<string, unknown>> }
  const { at, count, list, delivery, expression, unknown, either, nested, withDefault, unionDefault, data } = schema.properties
  t.match(at, { type: 'string', format: 'date-time', description: 'When', nullable: true })
  t.notOk('anyOf' in at!)
  t.match(count, { type: 'integer', nullable: true })
  t.match(list, { type: 'array', items: { type: 'string', nullable: true } })
  t.match(delivery, { $ref: 'DeliverySummary', type: 'object', nullable: true }, 'a $ref takes its target\'s type, which Ajv wants beside nullable')
  t.equal((expression!.anyOf as unknown[]).length, 2, 'a $ref to a union stays a union')
  t.ok(Array.isArray(unknown!.anyOf), 'and so does a $ref to a schema not shared')
  t.equal((either!.anyOf as unknown[]).length, 3, 'two types besides null stay a union')
  t.ok(Array.isArray(nested!.anyOf), 'X that is a union itself stays')
  t.ok(Array.isArray(withDefault!.anyOf), 'X with a default stays: the default would become the field\'s')
  t.ok(Array.isArray(unionDefault!.anyOf), 'a union with a keyword of its own besides annotations stays')
  t.same(data!.default, { anyOf: [{ type: 'string' }, { type: 'null' }] }, 'data that looks like a union is left as it is')
  t.same(given, copy, 'the schema given is not changed')
})

t.test('what fast-json-stringify validates with Ajv keeps its unions, and a route that validates a rewritten shared schema keeps the originals', async (t) => {
  const Choice = Type.Object({ chosen: Type.Union([StringEnum(['yes', 'no']), Type.Null()]) }, { additionalProperties: false, $id: 'Choice' })
  const Other = Type.Object({ error: Type.String() }, { required: ['error'], $id: 'Other' })
  const inline = nullableRoute(Type.Union([Type.Object({ chosen: Type.Union([StringEnum(['yes', 'no']), Type.Null()]) }, { additionalProperties: false }), Other]), {}, new Set())
  t.ok(Array.isArray((inline as unknown as { anyOf: { properties: { chosen: { anyOf?: unknown } } }[] }).anyOf[0]!.properties.chosen.anyOf),
    'a field inside a union that stays is not rewritten: Ajv would refuse null in a nullable enum')

  const shared = { Choice, Other }
  const { rewritten } = nullableShared(shared)
  t.same([...rewritten], ['Choice'])
  t.equal(nullableRoute(Type.Union([Type.Ref('Choice'), Type.Ref('Other')]), shared, rewritten), undefined,
    'a route that chooses between rewritten shared schemas cannot be served by them')
  const serialize = buildSerializer(shared, OPTIONS)(route(Type.Union([Type.Ref('Choice'), Type.Ref('Other')])))
  t.equal(serialize({ chosen: null }), '{"chosen":null}', 'and is compiled from the originals')
  t.equal(buildSerializer(shared, OPTIONS)(route(Type.Ref('Choice')))({ chosen: null }), '{"chosen":null}')

  const Holder = Type.Object({ either: Type.Union([Type.Ref('Choice'), Type.Ref('Other')]) }, { $id: 'Holder' })
  const withHolder = { Choice, Other, Holder }
  t.equal(nullableShared(withHolder).schemas, withHolder, 'shared schemas that choose between rewritten ones are all kept as they are')
  t.equal(buildSerializer(withHolder, OPTIONS)(route(Type.Ref('Holder')))({ either: { chosen: null } }), '{"either":{"chosen":null}}')
})

t.test('a process serializes as before, with every kind of step, and its nullable fields are not validated on the way', async (t) => {
  const serialize = buildSerializer(SHARED, OPTIONS)(route({ $ref: 'ProcessInstance' }))
  const before = SerializerSelector()(SHARED, OPTIONS)(route({ $ref: 'ProcessInstance' }))
  const id = '01a2425a-a9cf-7390-992d-afeebe1da84d'
  const at = '2026-12-04T18:40:29.017Z'
  const step = {
    id, position: 1, kind: 'task', name: 'Call', state: 'done', start: { mode: 'afterPrevious' }, deadlineDays: null,
    refersTo: { property: true, address: false }, serviceId: null, target: null, startAt: at, startedAt: at, endedAt: null,
    assigneeUserId: id, deadlineAt: null, note: null, email: null, writeValues: null, decision: null, delivery: null, followUp: null
  }
  const steps = [
    step,
    { ...step, kind: 'webhook', serviceId: id, delivery: { id, status: 'succeeded', round: 1, attempts: 2, nextAttemptAt: null, lastStatusCode: 200, lastError: null } },
    { ...step, kind: 'webhook', target: { url: 'https://crm.example/hook', delivery: 'json' }, delivery: { id, status: 'pending', round: 1, attempts: 0, nextAttemptAt: at, lastStatusCode: null, lastError: 'timeout' } },
    { ...step, kind: 'email', email: { mode: 'automatic', to: 'addressEmail', subject: 'S', body: 'B' } },
    { ...step, kind: 'email', email: { mode: 'manual', to: { address: 'owner@example.com' }, subject: 'S', body: 'B' } },
    { ...step, kind: 'followUpProcess', followUp: { templateId: id, waitForCompletion: true } },
    { ...step, kind: 'writeValues', writeValues: { values: [{ record: 'property', field: 'checkedOn', value: { today: {} } }] } },
    { ...step, kind: 'decision', decision: { mode: 'automatic', condition: { lt: [{ field: 'property.marketValue' }, 3] }, yes: 3, no: null, chosen: 'yes' } },
    { ...step, deadlineDays: 2, deadlineAt: at, note: 'Called', startAt: null, startedAt: null, assigneeUserId: null }
  ]
  const instance = {
    id, templateId: id, templateName: 'Price check', status: 'running', responsibleUserId: id, controllerUserId: id, propertyId: id,
    addressId: null, parentId: null, parentStepId: null, version: 3, startedAt: at, endedAt: null, steps,
    currentStep: { id, position: 2, name: 'Call', state: 'due', assigneeUserId: null, startAt: at, deadlineAt: null }
  }
  const written = serialize(instance)
  t.equal(written, before(instance), 'the same text as the schemas as written give')
  t.same(JSON.parse(written), JSON.parse(JSON.stringify(instance)), 'every field, as it was given')

  // With the unions as they were, the serializer checks a value against the date-time format to choose
  // its branch, and throws when none matches; as nullable, a string is written as it is.
  const odd = { ...instance, steps: [{ ...step, startedAt: 'yesterday' }] }
  t.throws(() => before(odd), /does not match schema definition/)
  t.match(serialize(odd), /"startedAt":"yesterday"/)
})
