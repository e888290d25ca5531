import { orList, withArticle, type ErrorObject } from './validation-messages.js'

/*
 * Ajv reports a value that fails a union (anyOf) with an error for every branch and one for the union:
 * a nullable `deadlineDays` of 0 gave "must be >= 1", "must be null" and "must match a schema in anyOf".
 * condenseUnionErrors keeps one clear account per union: the null branch goes (a type error then says
 * "or null"); of the rest, the one branch the value plainly meant (ranked below) keeps its errors, and
 * where no one branch stands out, one error names the allowed shapes.
 *
 * A union's errors are those Ajv reported while it tried its branches: the run of errors at or under
 * its value just before its own error (Ajv reports a union after its branches, so an inner union, also
 * one reached through a `$ref` such as a process expression's own nesting, comes before the outer one
 * and is condensed first). An error there whose schema path is not under the union's (a branch's `$ref`
 * starts its paths afresh), or that an inner union already condensed, counts as a branch that failed
 * inside: the value reached into it.
 */

export function condenseUnionErrors<E extends ErrorObject>(errors: E[]): E[] {
  // One pass: `condensed` holds the errors before the current one, their unions already condensed, so a
  // union's run is at its end. Splicing each union's replacement into the whole list, as this did, took
  // time in the square of the errors: 2,000 items of a list that each failed a union took 17 s.
  const condensed: E[] = []
  const inner = new Set<E>()
  for (const error of errors) {
    if (error.keyword !== 'anyOf') {
      condensed.push(error)
      continue
    }
    const union = error
    const within = (e: E) => e.instancePath === union.instancePath || e.instancePath.startsWith(`${union.instancePath}/`)
    let from = condensed.length
    while (from > 0 && within(condensed[from - 1]!)) from--
    const prefix = `${union.schemaPath}/`
    const branches = new Map<string, E[]>()
    for (const tried of condensed.splice(from)) {
      const branch = !inner.has(tried) && tried.schemaPath.startsWith(prefix) ? tried.schemaPath.slice(prefix.length).split('/')[0] ?? '' : DEEP
      const list = branches.get(branch)
      if (list) list.push(tried)
      else branches.set(branch, [tried])
    }
    for (const kept of condenseUnion(union, branches)) {
      inner.add(kept)
      condensed.push(kept)
    }
  }
  return condensed
}

/** The pseudo-branch of the errors a union's value got deep into (see above). */
const DEEP = 'deep'

function condenseUnion<E extends ErrorObject>(union: E, branches: Map<string, E[]>): E[] {
  const isNull = (errors: ErrorObject[]) => errors.every((e) => e.keyword === 'type' && e.params.type === 'null' && e.instancePath === union.instancePath)
  const rest = [...branches.values()].filter((errors) => !isNull(errors))
  const nullable = rest.length < branches.size
  if (rest.length === 1) return rest[0]!.map((e) => (nullable && isWrongType(e, union) ? { ...e, message: `${e.message} or null` } : e))
  const deep = branches.get(DEEP)
  // A value that got deep into a branch plainly meant it: that branch ranks highest, and wins a tie.
  const ranks = rest.map((errors) => (errors === deep ? 2 : Math.min(...errors.map((e) => rank(e, union)))))
  const best = Math.max(...ranks)
  if (best > 0 && ranks.filter((r) => r === best).length === 1) return rest[ranks.indexOf(best)]!
  if (best === 2 && deep) return deep
  const discriminators = rest.map((errors) => errors.find((e) => isChild(e, union) && e.keyword === 'const'))
  const [first] = discriminators
  if (first && discriminators.every((d) => d?.instancePath === first.instancePath)) {
    // Objects told apart by one property whose value none takes: the error is that property's.
    return [{ ...first, message: `must be ${orList(discriminators.map((d) => JSON.stringify(d!.params.allowedValue)))}` }]
  }
  const labels = rest.map((errors) => label(errors, union))
  const message = labels.length === 0 || labels.includes(undefined) ? 'must match one of the shapes the schema allows'
    : `must be ${orList([...new Set([...labels as string[], ...nullable ? ['null'] : []])])}`
  return [{ ...union, message }]
}

const isWrongType = (e: ErrorObject, union: ErrorObject) => e.keyword === 'type' && e.instancePath === union.instancePath
const isValueMismatch = (e: ErrorObject) => e.keyword === 'type' || e.keyword === 'const' || e.keyword === 'enum'
const isChild = (e: ErrorObject, union: ErrorObject) => e.instancePath.startsWith(`${union.instancePath}/`) &&
  !e.instancePath.slice(union.instancePath.length + 1).includes('/')

/**
 * How plainly the value meant a branch: 0 when it is not even of the branch's kind (type, const or enum
 * of the value itself), 1 when an object's discriminating property differs or it has a property the
 * branch does not take, 2 when it has the branch's shape and fails inside.
 */
function rank(e: ErrorObject, union: ErrorObject): number {
  if (e.instancePath === union.instancePath && isValueMismatch(e)) return 0
  if (e.instancePath === union.instancePath && e.keyword === 'additionalProperties') return 1
  if (isChild(e, union) && (e.keyword === 'const' || e.keyword === 'enum')) return 1
  return 2
}

/** What a branch allows, as far as its errors say: a value, values or a type. */
function label(errors: ErrorObject[], union: ErrorObject): string | undefined {
  const own = errors.find((e) => e.instancePath === union.instancePath && (e.keyword === 'const' || e.keyword === 'enum'))
  if (own?.keyword === 'const') return JSON.stringify(own.params.allowedValue)
  if (own?.keyword === 'enum') return (own.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')
  const type = errors.find((e) => isWrongType(e, union))
  if (type) return withArticle(String(type.params.type))
  return undefined
}
