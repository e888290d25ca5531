import type { JsonObject } from '../../../db/database.js'
import { cutText } from '../../../lib/storable.js'
import { jsonEqual } from '../../records/fields.js'
import { operatorOf } from './check.js'
import type { Expression, StepFact } from './schema.js'

/** An expression that cannot be evaluated on these values (a text where a number is needed, a division by zero). */
export class ExpressionError extends Error {
  override name = 'ExpressionError'
}

/** What an expression can read while a process runs. */
export interface EvaluationContext {
  /** The linked records' fields as they are now; null when the process links no such record. */
  records: { property: JsonObject | null; address: JsonObject | null }
  /** The facts of the process's steps by position. */
  steps: Map<number, Record<StepFact, unknown>>
  /** Today in the tenant's time zone, YYYY-MM-DD. */
  today: string
}

type Node = Record<string, unknown>

/** Today's date in a time zone, YYYY-MM-DD. */
export function isoDateIn(now: Date, timeZone: string): string {
  return new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(now)
}

/** An ISO date (YYYY-MM-DD) so many days later (earlier, when negative). */
export function plusDays(isoDate: string, days: number): string {
  const [year, month, day] = isoDate.split('-').map(Number) as [number, number, number]
  return new Date(Date.UTC(year, month - 1, day + days)).toISOString().slice(0, 10)
}

const show = (value: unknown) => (typeof value === 'string' ? `"${cutText(value, 50)}"` : cutText(JSON.stringify(value) ?? 'nothing', 50))

/** The value of an expression; throws ExpressionError when it cannot be had. Reads data only, runs no code. */
export function evaluate(expression: Expression, context: EvaluationContext): unknown {
  if (expression === null || typeof expression !== 'object') return expression
  const node = expression as Node
  const op = operatorOf(expression)
  switch (op) {
    case 'literal': return node.literal
    case 'field': return readField(String(node.field), context)
    case 'exists': return readField(String((node.exists as Node).field), context) !== null
    case 'step': {
      const facts = context.steps.get(node.step as number)
      if (!facts) throw new ExpressionError(`the process has no step ${String(node.step)}`)
      return facts[node.of as StepFact] ?? null
    }
    case 'today': return plusDays(context.today, ((node.today as Node).plusDays as number | undefined) ?? 0)
    case 'not': return !asBoolean(evaluate(node.not as Expression, context), 'not')
    case 'and': return (node.and as Expression[]).every((item) => asBoolean(evaluate(item, context), 'and'))
    case 'or': return (node.or as Expression[]).some((item) => asBoolean(evaluate(item, context), 'or'))
    case 'add': case 'subtract': case 'multiply': case 'divide': return arithmetic(op, node[op] as Expression[], context)
    case 'eq': case 'ne': {
      const [left, right] = (node[op] as Expression[]).map((item) => evaluate(item, context))
      return jsonEqual(left, right) === (op === 'eq')
    }
    case 'lt': case 'lte': case 'gt': case 'gte': return ordering(op, node[op] as Expression[], context)
    default: throw new ExpressionError(`unknown operator ${String(op)}`)
  }
}

function readField(path: string, context: EvaluationContext): unknown {
  const [root, ...names] = path.split('.')
  const record = root === 'property' ? context.records.property : root === 'address' ? context.records.address : undefined
  if (record === undefined) throw new ExpressionError(`${path} names no linked record`)
  if (record === null) throw new ExpressionError(`the process has no linked ${root}`)
  let value: unknown = record
  for (const name of names) {
    if (typeof value !== 'object' || value === null || Array.isArray(value) || !Object.hasOwn(value, name)) return null
    value = (value as Node)[name]
  }
  return value ?? null
}

function asBoolean(value: unknown, op: string): boolean {
  if (typeof value !== 'boolean') throw new ExpressionError(`${op} needs true or false, not ${show(value)}`)
  return value
}

function arithmetic(op: 'add' | 'subtract' | 'multiply' | 'divide', operands: Expression[], context: EvaluationContext): number {
  const [left, right] = operands.map((item) => evaluate(item, context))
  for (const value of [left, right]) {
    if (typeof value !== 'number' || !Number.isFinite(value)) throw new ExpressionError(`${op} needs numbers, not ${show(value)}`)
  }
  const [a, b] = [left as number, right as number]
  if (op === 'divide' && b === 0) throw new ExpressionError('division by zero')
  const result = op === 'add' ? a + b : op === 'subtract' ? a - b : op === 'multiply' ? a * b : a / b
  if (!Number.isFinite(result)) throw new ExpressionError(`${op} gave a number too large`)
  return result
}

/** Numbers with numbers, strings (dates) with strings; a missing value (null) compares false. */
function ordering(op: 'lt' | 'lte' | 'gt' | 'gte', operands: Expression[], context: EvaluationContext): boolean {
  const [left, right] = operands.map((item) => evaluate(item, context))
  if (left === null || right === null) return false
  const comparable = (typeof left === 'number' && typeof right === 'number') || (typeof left === 'string' && typeof right === 'string')
  if (!comparable) throw new ExpressionError(`${op} cannot compare ${show(left)} with ${show(right)}`)
  // Texts as their order's sign against 0, numbers as they are.
  const [a, b] = typeof left === 'string' ? [textOrder(left, right as string), 0] : [left as number, right as number]
  return op === 'lt' ? a < b : op === 'lte' ? a <= b : op === 'gt' ? a > b : a >= b
}

/**
 * Texts by their characters (code points), as the README says: JavaScript's `<` compares UTF-16 units,
 * which put a character beyond U+FFFF (an emoji, 😀 U+1F600) before one from U+E000 (～ U+FF5E).
 */
function textOrder(a: string, b: string): number {
  for (let i = 0; i < a.length && i < b.length; i++) {
    const [x, y] = [a.codePointAt(i)!, b.codePointAt(i)!]
    if (x !== y) return x - y
    if (x > 0xffff) i++
  }
  return a.length - b.length
}
