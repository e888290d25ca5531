/**
 * Response schemas as fast-json-stringify serializes them fastest. Our schemas say "this or null" as
 * `anyOf: [X, {type: 'null'}]` (TypeBox's `Type.Union([X, Type.Null()])`), as the OpenAPI document
 * shows them. fast-json-stringify serializes an `anyOf` by validating the value against each branch
 * with Ajv, formats included, and writing it by the first that matches: every nullable timestamp of
 * a process's twenty steps went through the date-time check on every response (`npm run bench:api`).
 * The same field as `{...X, nullable: true}` is written by a null test and X's own code.
 *
 * Only the serializer sees the rewritten schemas; validation and the OpenAPI document keep the
 * originals. The values we send are ours, so a branch's checks (a format, a pattern) only ever chose
 * between X and null. What stays as it is:
 * - a union of more than one schema besides null, X that is a union itself, a `$ref` to one or to a
 *   schema that is not shared, X with a `default` (it would become the field's), and a union with
 *   keywords of its own besides annotations;
 * - everything inside a union that stays, and in `if`/`not`: fast-json-stringify validates those
 *   with Ajv, where `nullable` widens only the `type` beside it (an `enum`, a `const` or a `$ref`'s
 *   target would still refuse null). A schema whose left union refers to a shared schema that has
 *   rewritten fields cannot be served so: `nullableRoute` says so, and its route keeps the originals.
 */

type Schema = Record<string, unknown>
export type SharedSchemas = Record<string, unknown>

/** Keywords whose values are data, not schemas: never rewritten, never walked. */
const DATA = new Set(['default', 'const', 'enum', 'examples', 'example'])
/** Keywords fast-json-stringify answers with Ajv's validation: what is under them stays as it is. */
const VALIDATED = new Set(['anyOf', 'oneOf', 'if', 'not'])
/** Keywords a rewritten union may carry: they change nothing the serializer writes. */
const ANNOTATIONS = new Set(['description', 'title', '$comment', 'deprecated', 'readOnly', 'writeOnly', 'examples', 'example'])
const COMBINATORS = ['anyOf', 'oneOf', 'allOf', 'if', 'not'] as const

function isSchema(value: unknown): value is Schema {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function isNull(schema: unknown): boolean {
  return isSchema(schema) && schema.type === 'null' && Object.keys(schema).every((key) => key === 'type' || ANNOTATIONS.has(key))
}

/**
 * The type of X when fast-json-stringify writes it with `nullable: true` added, by a null test and
 * its own code: one type, no union and no default of its own. Ajv, which fast-json-stringify also
 * compiles the schema with, takes `nullable` only beside a `type`, so a `$ref` gets its target's.
 * A `$ref` to another `$ref` is left alone (no chains, no cycles).
 */
function nullableType(schema: unknown, shared: SharedSchemas): string | undefined {
  if (!isSchema(schema) || 'nullable' in schema || 'default' in schema || COMBINATORS.some((keyword) => keyword in schema)) return undefined
  if (typeof schema.$ref === 'string') {
    const target = shared[schema.$ref]
    return isSchema(target) && typeof target.$ref !== 'string' ? nullableType(target, shared) : undefined
  }
  return typeof schema.type === 'string' && schema.type !== 'null' ? schema.type : undefined
}

/** `{...X, nullable: true}` for `anyOf: [X, null]` (either order) with annotations only, when X can take it. */
function asNullable(schema: Schema, shared: SharedSchemas): Schema | undefined {
  const { anyOf, ...siblings } = schema
  if (!Array.isArray(anyOf) || anyOf.length !== 2 || !Object.keys(siblings).every((key) => ANNOTATIONS.has(key))) return undefined
  const [first, second] = anyOf as unknown[]
  const other = isNull(second) ? first : isNull(first) ? second : undefined
  const type = nullableType(other, shared)
  if (type === undefined) return undefined
  // The type matters for a $ref, whose target's it is; beside X's own it changes nothing.
  return { ...siblings, ...(other as Schema), type, nullable: true }
}

interface Walk {
  shared: SharedSchemas
  /** Set when a rewrite happened. */
  rewrote: boolean
  /** The shared schemas a `$ref` names, anywhere. */
  refs: Set<string>
  /** Those a `$ref` under a validated keyword names. */
  validatedRefs: Set<string>
}

const walkOf = (shared: SharedSchemas): Walk => ({ shared, rewrote: false, refs: new Set(), validatedRefs: new Set() })

function rewrite(value: unknown, walk: Walk, validated: boolean): unknown {
  if (Array.isArray(value)) return value.map((item) => rewrite(item, walk, validated))
  if (!isSchema(value)) return value
  if (typeof value.$ref === 'string') {
    walk.refs.add(value.$ref)
    if (validated) walk.validatedRefs.add(value.$ref)
  }
  const nullable = validated ? undefined : asNullable(value, walk.shared)
  const schema = nullable ?? value
  if (nullable) walk.rewrote = true
  const copy: Schema = {}
  for (const [key, child] of Object.entries(schema)) {
    copy[key] = DATA.has(key) ? child : rewrite(child, walk, validated || VALIDATED.has(key))
  }
  return copy
}

/**
 * The shared schemas of a serializer context, rewritten; or as they are, should one of them validate
 * (under a union that stays) a shared schema with rewritten fields. `rewritten`: the ids of those
 * with rewritten fields, or that refer to one (none when nothing was rewritten).
 */
export function nullableShared(shared: SharedSchemas): { schemas: SharedSchemas; rewritten: Set<string> } {
  const walks = new Map(Object.entries(shared).map(([id, schema]) => {
    const walk = walkOf(shared)
    return [id, { walk, schema: rewrite(schema, walk, false) }]
  }))
  const rewritten = new Set([...walks].filter(([, { walk }]) => walk.rewrote).map(([id]) => id))
  for (let grew = true; grew;) {
    grew = false
    for (const [id, { walk }] of walks) {
      if (!rewritten.has(id) && [...walk.refs].some((ref) => rewritten.has(ref))) {
        rewritten.add(id)
        grew = true
      }
    }
  }
  const validated = [...walks.values()].some(({ walk }) => [...walk.validatedRefs].some((ref) => rewritten.has(ref)))
  if (validated) return { schemas: shared, rewritten: new Set() }
  return { schemas: Object.fromEntries([...walks].map(([id, { schema }]) => [id, schema])), rewritten }
}

/**
 * A route's response schema, rewritten against shared schemas that `nullableShared` rewrote; undefined
 * when the route validates (under a union that stays) one of those with rewritten fields, which Ajv
 * would then refuse null in: such a route needs the original shared schemas.
 */
export function nullableRoute<T>(schema: T, shared: SharedSchemas, rewritten: Set<string>): T | undefined {
  const walk = walkOf(shared)
  const result = rewrite(schema, walk, false) as T
  return [...walk.validatedRefs].some((ref) => rewritten.has(ref)) ? undefined : result
}
