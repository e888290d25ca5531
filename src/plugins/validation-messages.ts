/** What a validation error of Ajv's (and Fastify's copy of it) carries. */
export interface ErrorObject {
  keyword: string
  instancePath: string
  schemaPath: string
  params: Record<string, unknown>
  message?: string
}

/*
 * Ajv's messages for some keywords do not say what would do: "must be equal to one of the allowed
 * values" names none of them. Without Ajv's `verbose` option (which would copy request values and
 * schemas into every error, also on logged ones) the error's params still name what the schema allows;
 * clearerMessage words it from them. Only Ajv's own wording is replaced: an error whose message was
 * written here (src/plugins/query-strings.ts) keeps it. This runs only as a refusal is answered.
 */

/** Values an enum's message names before it stops and says how many there are. */
const ENUM_NAMED = 10

type Params = Record<string, unknown>
type Rewrite = (params: Params) => string | undefined

const REWRITES: Record<string, [ajvMessage: (params: Params) => string, Rewrite]> = {
  enum: [() => 'must be equal to one of the allowed values', (params) => Array.isArray(params.allowedValues) ? mustBeOneOf(params.allowedValues) : undefined],
  const: [() => 'must be equal to constant', (params) => 'allowedValue' in params ? `must be ${shown(params.allowedValue)}` : undefined],
  // The pointer ends in the property's name; the detail names it too, for a client that shows only details.
  additionalProperties: [() => 'must NOT have additional properties',
    (params) => typeof params.additionalProperty === 'string' ? `${shown(params.additionalProperty)} is not a known field` : undefined],
  // A type with its article ("must be an integer"), which a nullable field's union extends to "must be an integer or null".
  type: [(params) => `must be ${Array.isArray(params.type) ? params.type.join(',') : String(params.type)}`, (params) => typeWords(params.type)],
  minimum: [(params) => `must be >= ${String(params.limit)}`, (params) => bound('must be at least', params.limit)],
  maximum: [(params) => `must be <= ${String(params.limit)}`, (params) => bound('must be at most', params.limit)],
  exclusiveMinimum: [(params) => `must be > ${String(params.limit)}`, (params) => bound('must be greater than', params.limit)],
  exclusiveMaximum: [(params) => `must be < ${String(params.limit)}`, (params) => bound('must be less than', params.limit)],
  pattern: [(params) => `must match pattern "${String(params.pattern)}"`,
    (params) => typeof params.pattern !== 'string' ? undefined
      : Object.hasOwn(PATTERNS, params.pattern) ? PATTERNS[params.pattern] : `must match the regular expression "${params.pattern}"`],
  // Ajv counts from 0 and names the later item first ("items ## 1 and 0 are identical"): the first and second here.
  uniqueItems: [(params) => `must NOT have duplicate items (items ## ${String(params.j)} and ${String(params.i)} are identical)`,
    (params) => typeof params.i === 'number' && typeof params.j === 'number'
      ? `must not list the same value twice (items ${Math.min(params.i, params.j) + 1} and ${Math.max(params.i, params.j) + 1} are equal)` : undefined],
  // Sizes: a lower limit of 1 reads "must not be empty".
  minLength: [(params) => `must NOT have fewer than ${String(params.limit)} characters`, (params) => atLeast(params.limit, 'must be at least', 'character', ' long')],
  maxLength: [(params) => `must NOT have more than ${String(params.limit)} characters`, (params) => atMost(params.limit, 'must be at most', 'character', ' long')],
  minItems: [(params) => `must NOT have fewer than ${String(params.limit)} items`, (params) => atLeast(params.limit, 'must have at least', 'item')],
  maxItems: [(params) => `must NOT have more than ${String(params.limit)} items`, (params) => atMost(params.limit, 'must have at most', 'item')],
  minProperties: [(params) => `must NOT have fewer than ${String(params.limit)} properties`, (params) => atLeast(params.limit, 'must have at least', 'property')],
  maxProperties: [(params) => `must NOT have more than ${String(params.limit)} properties`, (params) => atMost(params.limit, 'must have at most', 'property')],
  // As with additionalProperties, the pointer ends in the name and the detail names it too.
  required: [(params) => `must have required property '${String(params.missingProperty)}'`,
    (params) => typeof params.missingProperty === 'string' ? `${shown(params.missingProperty)} is required` : undefined],
  format: [(params) => `must match format "${String(params.format)}"`,
    (params) => typeof params.format === 'string' && Object.hasOwn(FORMATS, params.format) ? `must be ${FORMATS[params.format]} (format "${params.format}")` : undefined]
}

/**
 * What the request schemas' patterns mean, by the exact pattern: a pattern changed or added shows itself
 * (as a regular expression) until it is given words here, so words never describe a pattern they do not.
 */
const PATTERNS: Record<string, string> = {
  // PlainText (src/modules/templates/text.ts) and an e-mail step's body: text Postgres can store.
  '^[^\\u0000]*$': 'must not contain the NUL character (U+0000)',
  // An e-mail step's subject.
  '^[^\\u0000\\r\\n]*$': 'must not contain a line break (CR or LF) or the NUL character (U+0000)',
  // A tenant's webId.
  '^[A-Za-z0-9_-]{1,64}$': 'must be 1 to 64 characters, each a letter A–Z or a–z, a digit, _ or -',
  // An Idempotency-Key.
  '^[\\x21-\\x7e]+$': 'must be printable ASCII without spaces',
  // An expression's field (its schema's description, src/modules/templates/expressions/schema.ts).
  '^(property|address)\\.[^.]+(\\.[^.]+)*$': 'must be property.<field> or address.<field>, nested fields joined with dots, such as property.price or address.email',
  // Settings (src/config.ts): DATABASE_URL and SMTP_URL.
  '^postgres(ql)?://': 'must be a postgres:// (or postgresql://) URL, such as postgres://baton@127.0.0.1:5432/baton',
  '^smtps?://': 'must be an smtp:// (or smtps://) URL, such as smtp://127.0.0.1:1025'
}

/** What a string of each format is, with an example: Ajv's "must match format" names the format alone. */
const FORMATS: Record<string, string> = {
  uuid: 'a UUID such as 01a2253b-4a10-7e2f-8c3b-7d9e1f2a4b56',
  date: 'a date written YYYY-MM-DD, such as 2026-03-02',
  'date-time': 'a date and time with its UTC offset (RFC 3339), such as 2026-03-02T08:00:00Z or 2026-03-02T09:00:00+01:00',
  time: 'a time with its UTC offset (RFC 3339), such as 08:00:00Z',
  email: 'an e-mail address such as anna@example.com',
  uri: 'an absolute URI such as https://example.com/hook'
}

export function clearerMessage<E extends ErrorObject>(error: E): E {
  const rewrite = Object.hasOwn(REWRITES, error.keyword) ? REWRITES[error.keyword] : undefined
  if (!rewrite || error.message !== rewrite[0](error.params)) return error
  const message = rewrite[1](error.params)
  return message === undefined ? error : { ...error, message }
}

const bound = (words: string, limit: unknown) => (typeof limit === 'number' ? `${words} ${limit}` : undefined)

function atLeast(limit: unknown, words: string, unit: string, tail = ''): string | undefined {
  return limit === 1 ? 'must not be empty' : atMost(limit, words, unit, tail)
}

function atMost(limit: unknown, words: string, unit: string, tail = ''): string | undefined {
  if (typeof limit !== 'number') return undefined
  return `${words} ${limit} ${limit === 1 ? unit : unit.endsWith('y') ? `${unit.slice(0, -1)}ies` : `${unit}s`}${tail}`
}

/** "must be" and the type or types (a schema's `type` may list several) with their articles. */
function typeWords(type: unknown): string | undefined {
  const types = Array.isArray(type) ? type : [type]
  if (types.length === 0 || !types.every((t) => typeof t === 'string')) return undefined
  return `must be ${orList(types.map(withArticle))}`
}

/** A JSON type as a noun with its article: an integer, a string, null. */
export const withArticle = (type: string) => (type === 'null' ? type : /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`)

/** a, b or c. */
export function orList(items: string[]): string {
  return items.length <= 1 ? items.join('') : `${items.slice(0, -1).join(', ')} or ${items.at(-1)}`
}

function mustBeOneOf(values: unknown[]): string {
  if (values.length === 1) return `must be ${shown(values[0])}`
  const named = values.slice(0, ENUM_NAMED).map(shown).join(', ')
  return values.length <= ENUM_NAMED ? `must be one of ${named}` : `must be one of ${named}, … (${values.length} values in all)`
}

/** A value (of the schema's, or a property's name) as JSON, cut short where it is long. */
function shown(value: unknown): string {
  const json = JSON.stringify(value) ?? String(value)
  return json.length <= 60 ? json : `${json.slice(0, 59)}…`
}
