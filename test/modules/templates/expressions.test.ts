import t from 'tap'
import { checkExpression, moveStepReferences, stepReferences } from '../../../src/modules/templates/expressions/check.js'
import { evaluate, ExpressionError, isoDateIn, type EvaluationContext } from '../../../src/modules/templates/expressions/evaluate.js'
import type { Expression } from '../../../src/modules/templates/expressions/schema.js'

const context: EvaluationContext = {
  records: { property: { price: 450000, area: 90, owner: { name: 'Anna' }, status: 'listed', soldOn: null }, address: null },
  steps: new Map([[1, { outcome: 'done', decision: null, statusCode: 200, deliveryStatus: 'succeeded' }]]),
  today: '2026-12-31'
}
const run = (expression: Expression) => evaluate(expression, context)

t.test('values, arithmetic, comparisons and logic', async (t) => {
  t.equal(run({ divide: [{ field: 'property.price' }, { field: 'property.area' }] }), 5000)
  t.equal(run({ field: 'property.owner.name' }), 'Anna')
  t.equal(run({ field: 'property.owner.missing' }), null)
  t.equal(run({ field: 'property.soldOn' }), null)
  t.equal(run({ exists: { field: 'property.soldOn' } }), false)
  t.equal(run({ exists: { field: 'property.status' } }), true)
  t.equal(run({ today: { plusDays: 1 } }), '2027-01-01')
  t.equal(run({ today: {} }), '2026-12-31')
  t.equal(run({ gte: [{ today: {} }, '2026-12-01'] }), true, 'ISO dates compare as text')
  t.equal(run({ lt: [{ field: 'property.soldOn' }, '2027-01-01'] }), false, 'a missing value compares false')
  // Code points, not UTF-16 units: 😀 (U+1F600, two units from U+D83D) comes after ～ (U+FF5E).
  t.equal(run({ lt: [{ literal: '😀' }, '～'] }), false, 'texts compare by their characters, one beyond U+FFFF too')
  t.equal(run({ gt: [{ literal: 'a😀' }, 'a～'] }), true)
  t.equal(run({ lte: [{ literal: 'a😀' }, 'a😀b'] }), true, 'a text before a longer one it begins')
  t.equal(run({ gte: [{ literal: '😀' }, '😀'] }), true)
  t.equal(run({ and: [{ eq: [{ step: 1, of: 'statusCode' }, 200] }, { ne: [{ field: 'property.status' }, 'sold'] }] }), true)
  t.equal(run({ or: [false, { not: { eq: [{ literal: { a: [1] } }, { literal: { a: [1] } }] } }] }), false)
  t.same(run({ literal: { add: [1, 2] } }), { add: [1, 2] }, 'a literal is data, not an operator')
})

t.test('what cannot be evaluated throws ExpressionError', async (t) => {
  t.throws(() => run({ divide: [1, { subtract: [2, 2] }] }), new ExpressionError('division by zero'))
  t.throws(() => run({ add: [{ field: 'property.status' }, 1] }), /add needs numbers, not "listed"/)
  t.throws(() => run({ lt: [{ field: 'property.status' }, 1] }), /lt cannot compare "listed" with 1/)
  t.throws(() => run({ and: [{ field: 'property.price' }] }), /and needs true or false, not 450000/)
  t.throws(() => run({ field: 'address.email' }), /the process has no linked address/)
  t.throws(() => run({ multiply: [1e308, 10] }), /too large/)
  t.throws(() => run({ step: 7, of: 'outcome' }), /no step 7/)
})

t.test('the check knows types, scope and limits; step references move', async (t) => {
  const scope = { position: 3, refersTo: { property: true, address: false } }
  t.same(checkExpression({ gt: [{ field: 'property.price' }, 1] }, scope, '/c'), { type: 'boolean', errors: [] })
  t.same(checkExpression({ add: [true, { today: {} }] }, scope, '/c').errors.map((e) => e.pointer), ['/c/add/0', '/c/add/1'])
  t.same(checkExpression({ step: 3, of: 'outcome' }, scope, '/c').errors.map((e) => e.pointer), ['/c/step'])
  let wide: Expression = 1
  for (let i = 0; i < 5; i++) wide = { add: [wide, { add: [1, { add: [1, 1] }] }] }
  t.same(checkExpression(wide, scope, '/c').errors, [])
  const many = { and: Array.from({ length: 20 }, () => ({ or: Array.from({ length: 20 }, () => true) })) }
  t.match(checkExpression(many, scope, '/c').errors, [{ pointer: '/c', detail: 'has more than 200 parts' }])
  // A literal number, text, true/false or null is typed as the bare value is; only an object or a list is json.
  t.same(checkExpression({ gt: [{ add: [{ literal: 1 }, 2] }, { literal: 2 }] }, scope, '/c'), { type: 'boolean', errors: [] })
  t.same(checkExpression({ and: [{ literal: true }, { lt: [{ literal: '2026-01-01' }, { today: {} }] }] }, scope, '/c'), { type: 'boolean', errors: [] })
  t.same(checkExpression({ literal: false }, scope, '/c'), { type: 'boolean', errors: [] })
  t.same(checkExpression({ add: [{ literal: 'x' }, { literal: [1] }] }, scope, '/c').errors.map((e) => e.detail), ['add needs numbers; this is a string', 'add needs numbers; this is a json'])
  t.same(checkExpression({ divide: [1, { literal: 0 }] }, scope, '/c').errors, [{ pointer: '/c/divide/1', detail: 'divides by zero' }])
  const expression: Expression = { and: [{ eq: [{ step: 1, of: 'decision' }, 'yes'] }, { eq: [{ literal: { step: 1, of: 'x' } }, 1] }] }
  t.same(stepReferences(expression), [1], 'a literal holds no reference')
  t.same(moveStepReferences(expression, (p) => p + 2), { and: [{ eq: [{ step: 3, of: 'decision' }, 'yes'] }, { eq: [{ literal: { step: 1, of: 'x' } }, 1] }] })
})

t.test('today is the date in the tenant\'s time zone', async (t) => {
  const lateEvening = new Date('2026-12-31T23:30:00Z')
  t.equal(isoDateIn(lateEvening, 'UTC'), '2026-12-31')
  t.equal(isoDateIn(lateEvening, 'Europe/Berlin'), '2027-01-01')
  t.equal(isoDateIn(lateEvening, 'America/New_York'), '2026-12-31')
})
