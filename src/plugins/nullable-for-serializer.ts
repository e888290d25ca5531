/**
 * A response schema as fast-json-stringify serializes it fastest. Our schemas say "this or null" as
 * `anyOf: [X, {type: 'null'}]` (TypeBox's `Type.Union([X, Type.Null()])`), as the OpenAPI document
 * shows them. fast-json-stringify serializes an `anyOf` by validating the value against each branch
 * with Ajv, formats included, and writing it by the first that matches: every nullable timestamp of
 * a process's twenty steps went through the date-time check on every response (`npm run bench:api`).
 * The same field as `{...X, nullable: true}` is written by a null test and X's own code.
 *
 * Only the serializer sees the rewritten schema; validation and the OpenAPI document keep the
 * originals. The values we send are ours, so a branch's checks (a format, a pattern) only ever chose
 * between X and null. Unions of more than one schema besides null stay as they are, and so does X
 * when it is itself a union, or a `$ref` to one or to a schema not among `shared` (by `$id`).
 */
export function nullableForSerializer<T>(schema: T, shared: Record<string, unknown> = {}): T {
  return rewrite(schema, shared) as T
}

type Schema = Record<string, unknown>

const COMBINATORS = ['anyOf', 'oneOf', 'allOf', 'if', 'not'] as const

function isSchema(value: unknown): value is Schema {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function isNull(schema: unknown): boolean {
  return isSchema(schema) && schema.type === 'null' && Object.keys(schema).every((key) => key === 'type' || key === 'description')
}

/**
 * The type of `schema` when fast-json-stringify writes it with `nullable: true` added, by a null test
 * and its own code: one type, no union of its own. Ajv, which fast-json-stringify also compiles the
 * schema with, takes `nullable` only beside a `type`, so a `$ref` gets its target's.
 */
function nullableType(schema: unknown, shared: Record<string, unknown>): string | undefined {
  if (!isSchema(schema) || 'nullable' in schema || COMBINATORS.some((keyword) => keyword in schema)) return undefined
  if (typeof schema.$ref === 'string') {
    const target = shared[schema.$ref]
    return isSchema(target) && typeof target.$ref !== 'string' ? nullableType(target, shared) : undefined
  }
  return typeof schema.type === 'string' && schema.type !== 'null' ? schema.type : undefined
}

/** `{...X, nullable: true}` for `anyOf: [X, null]` (either order) with its siblings, when X can take it. */
function asNullable(schema: Schema, shared: Record<string, unknown>): Schema | undefined {
  const { anyOf, ...siblings } = schema
  if (!Array.isArray(anyOf) || anyOf.length !== 2) return undefined
  const [first, second] = anyOf as unknown[]
  const other = isNull(second) ? first : isNull(first) ? second : undefined
  const type = nullableType(other, shared)
  return type === undefined ? undefined : { ...(other as Schema), ...siblings, type, nullable: true }
}

function rewrite(value: unknown, shared: Record<string, unknown>): unknown {
  if (Array.isArray(value)) return value.map((item) => rewrite(item, shared))
  if (!isSchema(value)) return value
  const copy: Schema = {}
  for (const [key, child] of Object.entries(value)) copy[key] = rewrite(child, shared)
  return asNullable(copy, shared) ?? copy
}
