import { IF_MATCH_PATTERN } from '../lib/versioning.js'

// @fastify/swagger writes TypeBox's unions as OpenAPI 3.0 allows, but not as client generators read them:
// a union with null becomes `anyOf: [X, {type: object, nullable: true, enum: [null]}]` (typed `X | (never | null)`),
// a union of string literals `anyOf` of one-value enums (no enum type in Java, C# or Go). This rewrites both into
// the forms generators know, `nullable: true` and one `enum`, without changing which values a schema accepts.
// OpenAPI 3.0.3 lets `nullable` add null only to a `type` beside it (not through `allOf`, `anyOf` or a `$ref`):
// validators that read it so (Redocly, Ajv's `nullable`, gateways checking answers) refused our nulls where
// `nullable` stood beside a union or a reference. So it goes on a typed member of a union, on the merged
// schema of a one-member union, and on a copy of a referenced schema that does not take null itself.

type Json = Record<string, unknown>

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value)

const ANNOTATIONS = new Set(['description', 'title', 'example', 'deprecated'])

function isNullSchema(schema: unknown): boolean {
  return isObject(schema) && schema.nullable === true && Array.isArray(schema.enum) && schema.enum.length === 1 && schema.enum[0] === null &&
    Object.keys(schema).every((key) => key === 'type' || key === 'nullable' || key === 'enum' || ANNOTATIONS.has(key))
}

/** `{type: string, enum: [...]}` and nothing else: a literal or a string enum. */
function isStringEnum(schema: unknown): schema is Json & { enum: unknown[] } {
  return isObject(schema) && schema.type === 'string' && Array.isArray(schema.enum) &&
    Object.keys(schema).every((key) => key === 'type' || key === 'enum')
}

function tidyUnion(schema: Json, combinator: 'anyOf' | 'oneOf'): void {
  const members = schema[combinator]
  if (!Array.isArray(members)) return
  const nullable = members.some(isNullSchema)
  let rest = members.filter((member) => !isNullSchema(member))
  const literals = rest.filter(isStringEnum)
  if (literals.length > 1) {
    const merged = { type: 'string', enum: literals.flatMap((member) => member.enum) }
    rest = [merged, ...rest.filter((member) => !isStringEnum(member))]
  }
  delete schema[combinator]
  const typed = nullable && rest.length > 1 ? rest.find((member) => isObject(member) && typeof member.type === 'string' && member.$ref === undefined) : undefined
  if (rest.length === 1 && isObject(rest[0]) && rest[0].$ref === undefined && Object.keys(rest[0]).every((key) => !(key in schema) || ANNOTATIONS.has(key))) {
    // The union's own annotations (its description) say more where it is used than its member's.
    Object.assign(schema, { ...rest[0], ...schema })
  } else if (rest.length === 1) {
    schema.allOf = rest
  } else {
    schema[combinator] = rest
  }
  if (isObject(typed)) {
    typed.nullable = true
    if (Array.isArray(typed.enum) && !typed.enum.includes(null)) typed.enum = [...typed.enum, null]
  } else if (nullable) {
    schema.nullable = true
  }
}

/** Whether `schema` takes null as OpenAPI 3.0.3 reads `nullable`: beside a type, in a union's member, or by reference. */
function takesNull(schema: unknown, schemas: Json, seen = new Set<unknown>()): boolean {
  if (!isObject(schema) || seen.has(schema)) return false
  seen.add(schema)
  if (typeof schema.$ref === 'string') return takesNull(schemas[schema.$ref.replace('#/components/schemas/', '')], schemas, seen)
  if (schema.nullable === true && typeof schema.type === 'string') return !Array.isArray(schema.enum) || schema.enum.includes(null)
  return [schema.anyOf, schema.oneOf].some((members) => Array.isArray(members) && members.some((member) => takesNull(member, schemas, seen)))
}

/**
 * A nullable reference, `{nullable: true, allOf: [{$ref}]}`: when the referenced schema takes null itself the
 * `nullable` goes; when it has a type, the reference becomes a copy of it beside which `nullable` holds. The
 * schema is rewritten before it is copied, so a copy holds no nullable reference whatever the order of the
 * components; one that refers to itself as nullable keeps that reference (its copy would never end).
 * The component stays, a named type for clients, also where nothing refers to it any more.
 */
function nullableReferences(node: unknown, schemas: Json, copying: Set<string> = new Set()): void {
  if (Array.isArray(node)) {
    node.forEach((item) => nullableReferences(item, schemas, copying))
    return
  }
  if (!isObject(node)) return
  for (const [key, value] of Object.entries(node)) {
    // A property map's names are no keywords (a property may be called "default"); example, enum and default hold data.
    if (key === 'properties' && isObject(value)) Object.values(value).forEach((property) => nullableReferences(property, schemas, copying))
    else if (key !== 'example' && key !== 'enum' && key !== 'default') nullableReferences(value, schemas, copying)
  }
  const member = Array.isArray(node.allOf) && node.allOf.length === 1 ? node.allOf[0] : undefined
  if (node.nullable !== true || node.type !== undefined || !isObject(member) || typeof member.$ref !== 'string') return
  const name = member.$ref.replace('#/components/schemas/', '')
  const target = schemas[name]
  if (takesNull(member, schemas)) {
    delete node.nullable
  } else if (isObject(target) && typeof target.type === 'string' && !copying.has(name)) {
    copying.add(name)
    nullableReferences(target, schemas, copying)
    copying.delete(name)
    const { $id: _id, title: _title, ...copy } = structuredClone(target)
    delete node.allOf
    Object.assign(node, { ...copy, ...node })
    if (Array.isArray(node.enum) && !node.enum.includes(null)) node.enum = [...node.enum, null]
  }
}

function tidy(node: unknown): void {
  if (Array.isArray(node)) {
    node.forEach(tidy)
    return
  }
  if (!isObject(node)) return
  Object.values(node).forEach(tidy)
  // OpenAPI 3.0 schemas take one `example`; @fastify/swagger turns JSON Schema's `examples` into it only
  // down properties and items, so a union's member kept them (a Media Type's `examples` is a map, not a list).
  if (Array.isArray(node.examples)) {
    if (node.examples.length > 0 && !('example' in node)) node.example = node.examples[0]
    delete node.examples
  }
  tidyUnion(node, 'anyOf')
  tidyUnion(node, 'oneOf')
  // OpenAPI 3.0.3: a nullable enum accepts null only when its values list null.
  if (node.nullable === true && Array.isArray(node.enum) && !node.enum.includes(null)) node.enum = [...node.enum, null]
}

interface Parameter { in?: string; name?: string; schema?: Json }

const operationsOf = (paths: Json): Json[] => Object.values(paths).flatMap((methods) => (isObject(methods) ? Object.values(methods) : [])).filter(isObject)

function declareIfMatchPattern(paths: Json): void {
  for (const operation of operationsOf(paths)) {
    const parameters = Array.isArray(operation.parameters) ? operation.parameters as Parameter[] : []
    for (const parameter of parameters) {
      if (parameter.in === 'header' && parameter.name === 'if-match' && parameter.schema) parameter.schema.pattern = IF_MATCH_PATTERN
    }
  }
}

/** What a GET's 304 says (src/plugins/conditional-get.ts); the contract check asks every GET that answers an ETag for one. */
const NOT_MODIFIED = 'Not modified: the If-None-Match names the current ETag'

/**
 * Declares If-None-Match and its 304 on every GET whose 200 carries an ETag: src/plugins/conditional-get.ts
 * answers them for all such routes at once, so the routes' schemas do not each repeat it.
 */
function declareNotModified(paths: Json): void {
  for (const methods of Object.values(paths)) {
    const get = isObject(methods) ? methods.get : undefined
    const responses = isObject(get) ? get.responses : undefined
    const ok = isObject(responses) ? responses['200'] : undefined
    const etag = isObject(ok) && isObject(ok.headers) ? ok.headers.ETag : undefined
    if (!isObject(get) || !isObject(responses) || !isObject(etag)) continue
    responses['304'] = { description: NOT_MODIFIED, headers: { ETag: { ...etag, description: 'The current version, the one If-None-Match named' } } }
    const parameters = Array.isArray(get.parameters) ? get.parameters as Parameter[] : []
    get.parameters = [...parameters, {
      schema: { type: 'string' },
      in: 'header',
      name: 'if-none-match',
      required: false,
      description: 'The ETag the caller holds ("3" or W/"3"), a list of them ("3", "4") or *: when one names the current version, the answer is 304 without a body. ' +
        'A value that does not parse is ignored.'
    }]
  }
}

/**
 * Marks the body schema of a route whose body may be left out (src/plugins/swagger.ts). @fastify/swagger
 * writes every request body as required, so a generated client would have to send one the server does not need.
 */
export const OPTIONAL_BODY = 'x-optional-body'

function declareOptionalBodies(paths: Json): void {
  for (const operation of operationsOf(paths)) {
    const { requestBody } = operation
    if (!isObject(requestBody) || !isObject(requestBody.content)) continue
    const schemas = Object.values(requestBody.content).map((media) => (isObject(media) ? media.schema : undefined)).filter(isObject)
    if (!schemas.some((schema) => schema[OPTIONAL_BODY] === true)) continue
    for (const schema of schemas) delete schema[OPTIONAL_BODY]
    requestBody.required = false
  }
}

/** The document @fastify/swagger built, in the shapes client generators expect. Changes it in place. */
export function tidyDocument<T extends object>(document: T): T {
  const { components, paths } = document as { components?: unknown; paths?: unknown }
  tidy(components)
  tidy(paths)
  const schemas = isObject(components) && isObject(components.schemas) ? components.schemas : {}
  nullableReferences(components, schemas)
  nullableReferences(paths, schemas)
  if (isObject(paths)) {
    declareIfMatchPattern(paths)
    declareOptionalBodies(paths)
    declareNotModified(paths)
  }
  return document
}
