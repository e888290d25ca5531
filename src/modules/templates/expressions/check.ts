import type { FieldError } from '../../../errors.js'
import { firstTooDeep } from '../../../lib/json-limits.js'
import { FIELDS_MAX_DEPTH } from '../../records/limits.js'
import { ARITHMETIC, COMPARISONS, EXPRESSION_LIMITS, type Expression } from './schema.js'

/** What an expression yields, as far as it is known before it runs ('any': a field, decided when it runs). */
export type ValueType = 'number' | 'string' | 'boolean' | 'null' | 'json' | 'any'

/** Where an expression stands: the position of its step, and the linked records its step refers to. */
export interface ExpressionScope {
  position: number
  refersTo: { property: boolean; address: boolean }
}

type Node = Record<string, unknown>

/** Levels a literal may nest: as deep as a record's field, the fields object around it being the first of FIELDS_MAX_DEPTH. */
const LITERAL_MAX_DEPTH = FIELDS_MAX_DEPTH - 1

const isNode = (value: unknown): value is Node => typeof value === 'object' && value !== null && !Array.isArray(value)
const ARITHMETIC_OPS: ReadonlySet<string> = new Set(ARITHMETIC)
const COMPARISON_OPS: ReadonlySet<string> = new Set(COMPARISONS)
const ORDERING_OPS: ReadonlySet<string> = new Set(['lt', 'lte', 'gt', 'gte'])

/** The operator of an expression object (its only key), or undefined for a literal. */
export function operatorOf(expression: Expression): string | undefined {
  return isNode(expression) ? Object.keys(expression).find((key) => key !== 'of') : undefined
}

/**
 * Checks an expression beyond its schema: the limits, the records its fields need, that steps it
 * reads come earlier, and the types of operands where they are known (a field's type is known only
 * when it runs). Each error points into the request.
 */
export function checkExpression(expression: Expression, scope: ExpressionScope, pointer: string): { type: ValueType; errors: FieldError[] } {
  const errors: FieldError[] = []
  let nodes = 0
  const visit = (value: unknown, at: string, depth: number): ValueType => {
    nodes += 1
    if (nodes === EXPRESSION_LIMITS.nodes + 1) errors.push({ pointer, detail: `has more than ${EXPRESSION_LIMITS.nodes} parts` })
    if (depth > EXPRESSION_LIMITS.depth) {
      errors.push({ pointer: at, detail: `nests deeper than ${EXPRESSION_LIMITS.depth} levels` })
      return 'any'
    }
    if (value === null) return 'null'
    if (typeof value === 'number') return 'number'
    if (typeof value === 'string') return 'string'
    if (typeof value === 'boolean') return 'boolean'
    if (!isNode(value)) return 'any'
    const op = operatorOf(value as Expression)
    if (op === 'literal') return literalType(value.literal, `${at}/literal`)
    if (op === 'field') return fieldType(value.field, `${at}/field`)
    if (op === 'exists') {
      fieldType((value.exists as Node).field, `${at}/exists/field`)
      return 'boolean'
    }
    if (op === 'step') {
      const step = value.step as number
      if (step >= scope.position) errors.push({ pointer: `${at}/step`, detail: `must name an earlier step (below ${scope.position}): a step reads only what came before it` })
      return value.of === 'statusCode' ? 'any' : 'string'
    }
    if (op === 'today') return 'string'
    if (op === 'not') return expectBoolean(visit(value.not, `${at}/not`, depth + 1), `${at}/not`)
    if (op === 'and' || op === 'or') {
      ;(value[op] as unknown[]).forEach((item, i) => expectBoolean(visit(item, `${at}/${op}/${i}`, depth + 1), `${at}/${op}/${i}`))
      return 'boolean'
    }
    if (op !== undefined && (ARITHMETIC_OPS.has(op) || COMPARISON_OPS.has(op))) {
      const [left, right] = value[op] as [unknown, unknown]
      const types = [visit(left, `${at}/${op}/0`, depth + 1), visit(right, `${at}/${op}/1`, depth + 1)] as const
      if (ARITHMETIC_OPS.has(op)) {
        types.forEach((type, i) => {
          if (type !== 'number' && type !== 'any') errors.push({ pointer: `${at}/${op}/${i}`, detail: `${op} needs numbers; this is a ${type}` })
        })
        const divisor = isNode(right) && operatorOf(right as Expression) === 'literal' ? right.literal : right
        if (op === 'divide' && divisor === 0) errors.push({ pointer: `${at}/${op}/1`, detail: 'divides by zero' })
        return 'number'
      }
      if (ORDERING_OPS.has(op)) {
        types.forEach((type, i) => {
          if (type !== 'number' && type !== 'string' && type !== 'any') errors.push({ pointer: `${at}/${op}/${i}`, detail: `${op} compares numbers or strings (dates); this is a ${type}` })
        })
        if ((types[0] === 'number' && types[1] === 'string') || (types[0] === 'string' && types[1] === 'number')) {
          errors.push({ pointer: `${at}/${op}`, detail: `${op} compares a number with a string` })
        }
      }
      return 'boolean'
    }
    return 'any'
  }
  const fieldType = (path: unknown, at: string): ValueType => {
    const root = String(path).split('.')[0]
    if (root === 'property' && !scope.refersTo.property) errors.push({ pointer: at, detail: 'reads the property: the step needs refersTo.property: true' })
    if (root === 'address' && !scope.refersTo.address) errors.push({ pointer: at, detail: 'reads the address: the step needs refersTo.address: true' })
    return 'any'
  }
  // A literal number, text, true/false or null is of that type, as the same value written bare is; only an object or a list is 'json'.
  const literalType = (literal: unknown, at: string): ValueType => {
    const deep = firstTooDeep(literal, LITERAL_MAX_DEPTH, at)
    if (deep !== undefined) errors.push({ pointer: deep, detail: `nests deeper than ${LITERAL_MAX_DEPTH} levels: a record's field holds no deeper value` })
    if (literal === null) return 'null'
    if (typeof literal === 'number') return 'number'
    if (typeof literal === 'string') return 'string'
    return typeof literal === 'boolean' ? 'boolean' : 'json'
  }
  const expectBoolean = (type: ValueType, at: string): ValueType => {
    if (type !== 'boolean' && type !== 'any') errors.push({ pointer: at, detail: `must be true or false (a condition); this is a ${type}` })
    return 'boolean'
  }
  const type = visit(expression, pointer, 1)
  return { type, errors }
}

/** The positions of the steps an expression reads. */
export function stepReferences(expression: Expression): number[] {
  const found: number[] = []
  walk(expression, (node) => {
    if (typeof node.step === 'number' && typeof node.of === 'string') found.push(node.step)
  })
  return found
}

/** The expression with each step position it reads replaced by `move(position)`. */
export function moveStepReferences(expression: Expression, move: (position: number) => number): Expression {
  const copy = structuredClone(expression)
  walk(copy, (node) => {
    if (typeof node.step === 'number' && typeof node.of === 'string') node.step = move(node.step)
  })
  return copy
}

function walk(value: unknown, visit: (node: Node) => void): void {
  if (Array.isArray(value)) {
    for (const item of value) walk(item, visit)
    return
  }
  if (!isNode(value)) return
  if ('literal' in value) return
  visit(value)
  for (const child of Object.values(value)) walk(child, visit)
}
