import { orList, withArticle } from './validation-messages.js'

/** What a validation error of Ajv's (and Fastify's copy of it) carries. */
interface ErrorObject {
  keyword: string
  instancePath: string
  schemaPath: string
  params: Record<string, unknown>
  message?: string
}

/*
 * Ajv reports a value that fails a union (anyOf) with an error for every branch and one for the union:
 * a nullable `deadlineDays` of 0 gave "must be >= 1", "must be null" and "must match a schema in anyOf".
 * condenseUnionErrors keeps one clear account per union: the null branch goes (a type error then says
 * "or null"); of the rest, the one branch the value plainly meant (ranked below) keeps its errors, and
 * where no one branch stands out, one error names the allowed shapes.
 */

export function condenseUnionErrors<E extends ErrorObject>(errors: E[]): E[] {
  const unions = errors.filter((e) => e.keyword === 'anyOf').sort((a, b) => b.schemaPath.length - a.schemaPath.length)
  let condensed = errors
  for (const union of unions) {
    const prefix = `${union.schemaPath}/`
    const branches = new Map<string, E[]>()
    for (const error of condensed.filter((e) => e.schemaPath.startsWith(prefix))) {
      const branch = error.schemaPath.slice(prefix.length).split('/')[0] ?? ''
      branches.set(branch, [...branches.get(branch) ?? [], error])
    }
    const replacement = condenseUnion(union, branches)
    condensed = condensed.flatMap((e) => (e === union ? replacement : e.schemaPath.startsWith(prefix) ? [] : [e]))
  }
  return condensed
}

function condenseUnion<E extends ErrorObject>(union: E, branches: Map<string, E[]>): E[] {
  const isNull = (errors: ErrorObject[]) => errors.every((e) => e.keyword === 'type' && e.params.type === 'null' && e.instancePath === union.instancePath)
  const rest = [...branches.values()].filter((errors) => !isNull(errors))
  const nullable = rest.length < branches.size
  if (rest.length === 1) return rest[0]!.map((e) => (nullable && isWrongType(e, union) ? { ...e, message: `${e.message} or null` } : e))
  const ranks = rest.map((errors) => Math.min(...errors.map((e) => rank(e, union))))
  const best = Math.max(...ranks)
  if (best > 0 && ranks.filter((r) => r === best).length === 1) return rest[ranks.indexOf(best)]!
  const discriminators = rest.map((errors) => errors.find((e) => isChild(e, union) && e.keyword === 'const'))
  const [first] = discriminators
  if (first && discriminators.every((d) => d?.instancePath === first.instancePath)) {
    // Objects told apart by one property whose value none takes: the error is that property's.
    return [{ ...first, message: `must be ${orList(discriminators.map((d) => JSON.stringify(d!.params.allowedValue)))}` }]
  }
  const labels = rest.map((errors) => label(errors, union))
  const message = labels.includes(undefined) ? 'must match one of the shapes the schema allows'
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
