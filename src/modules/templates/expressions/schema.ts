import { Type } from 'typebox'

/*
 * A small typed JSON expression language for decisions and computed values (docs/architecture.md,
 * Expressions). An expression is JSON data, never code: a literal, a field of a linked record, an
 * earlier step's outcome, today's date, or one operator over expressions. It is checked when a step
 * is saved (check.ts) and evaluated by the scheduler (evaluate.ts).
 */

/** What an earlier step can tell: its state, the branch a decision took, its webhook call's last status. */
const STEP_FACTS = ['outcome', 'decision', 'statusCode', 'deliveryStatus'] as const
export type StepFact = typeof STEP_FACTS[number]

export const ARITHMETIC = ['add', 'subtract', 'multiply', 'divide'] as const
export const COMPARISONS = ['eq', 'ne', 'lt', 'lte', 'gt', 'gte'] as const
type Arithmetic = typeof ARITHMETIC[number]
type Comparison = typeof COMPARISONS[number]

export type Expression =
  | string | number | boolean | null
  | { literal: unknown }
  | { field: string }
  | { step: number; of: StepFact }
  | { today: { plusDays?: number } }
  | { [op in Arithmetic | Comparison]?: [Expression, Expression] }
  | { and: Expression[] }
  | { or: Expression[] }
  | { not: Expression }
  | { exists: { field: string } }

/** Nesting and size limits, checked at save time. */
export const EXPRESSION_LIMITS = { depth: 12, nodes: 200, operands: 20, stringLength: 2000, days: 36500 }

const REF = { $ref: 'ProcessExpression' }
const object = (properties: Record<string, unknown>, required: string[], description: string) =>
  ({ type: 'object', properties, ...(required.length > 0 ? { required } : {}), additionalProperties: false, description })
const pair = { type: 'array', items: REF, minItems: 2, maxItems: 2 }
const FieldPath = {
  type: 'string', minLength: 1, maxLength: 300, pattern: '^(property|address)\\.[^.]+(\\.[^.]+)*$',
  description: 'property.<field> or address.<field>, nested fields joined with dots: property.price, address.email'
}

/**
 * The expression as JSON Schema, recursive through its $id (Ajv and OpenAPI follow the $ref). Its
 * static type is Expression; what the schema cannot say (known types, step positions, limits) check.ts checks.
 */
export const ExpressionSchema = Type.Unsafe<Expression>({
  $id: 'ProcessExpression',
  description: 'A typed JSON expression: a literal, {"field": "property.price"}, {"step": 2, "of": "statusCode"}, ' +
    '{"today": {"plusDays": 7}}, or an operator: add/subtract/multiply/divide and eq/ne/lt/lte/gt/gte over two expressions, ' +
    'and/or over a list, not, exists over a field, literal for an object or array value. Never evaluated as code.',
  anyOf: [
    { type: 'string', maxLength: EXPRESSION_LIMITS.stringLength },
    { type: 'number' },
    { type: 'boolean' },
    { type: 'null' },
    object({ literal: {} }, ['literal'], 'A JSON value as it is, e.g. an object or a list to write'),
    object({ field: FieldPath }, ['field'], 'A field of the linked property or address; null when it is missing'),
    object({
      step: { type: 'integer', minimum: 1, description: 'The position of an earlier step' },
      of: { type: 'string', enum: [...STEP_FACTS], description: 'outcome = its state (done, skipped, ...); decision = yes or no; statusCode = its webhook call\'s last HTTP status; deliveryStatus = that call\'s status' }
    }, ['step', 'of'], 'What an earlier step of the process did'),
    object({
      today: object({ plusDays: { type: 'integer', minimum: -EXPRESSION_LIMITS.days, maximum: EXPRESSION_LIMITS.days } }, [], 'Days to add')
    }, ['today'], 'Today\'s date (YYYY-MM-DD) in the tenant\'s time zone, plus N days'),
    ...[...ARITHMETIC, ...COMPARISONS].map((op) => object({ [op]: pair }, [op], `${op} of two expressions`)),
    object({ and: { type: 'array', items: REF, minItems: 1, maxItems: EXPRESSION_LIMITS.operands } }, ['and'], 'True when all are true'),
    object({ or: { type: 'array', items: REF, minItems: 1, maxItems: EXPRESSION_LIMITS.operands } }, ['or'], 'True when one is true'),
    object({ not: REF }, ['not'], 'True when false'),
    object({ exists: object({ field: FieldPath }, ['field'], 'The field') }, ['exists'], 'True when the field is present and not null')
  ]
})

/** A reference to the expression schema, for the settings of the kinds that use expressions. */
export const ExpressionRef = Type.Unsafe<Expression>(REF)
