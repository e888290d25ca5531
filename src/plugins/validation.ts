import { Ajv, type AnySchema, type Options } from 'ajv'
import addFormats from 'ajv-formats'

const common: Options = { removeAdditional: false, useDefaults: true, allErrors: true, strict: false }

function newAjv(options: Options, externalSchemas: Record<string, unknown>): Ajv {
  const ajv = new Ajv({ ...common, ...options })
  addFormats.default(ajv)
  for (const schema of Object.values(externalSchemas)) ajv.addSchema(schema as AnySchema)
  return ajv
}

type Compile = (route: { schema: unknown; httpPart?: string | undefined }) => ReturnType<Ajv['compile']>

// Fastify asks for a validator compiler in every plugin context (93 a boot here); building two Ajv
// instances with formats for each cost seconds a boot. Contexts with the same shared schemas share
// one pair, as Fastify's own compiler pools them.
const pool = new Map<string, Compile>()

/**
 * A body is JSON and must carry the right types ("5" is not a number); query strings, path
 * parameters and headers are text, so they are coerced to the schema's types.
 * Given to Fastify as `schemaController.compilersFactory.buildValidator`, so every context uses it.
 */
export function buildValidator(externalSchemas: Record<string, unknown>): Compile {
  const key = JSON.stringify(externalSchemas)
  let compile = pool.get(key)
  if (!compile) {
    const bodyAjv = newAjv({ coerceTypes: false }, externalSchemas)
    const textAjv = newAjv({ coerceTypes: 'array' }, externalSchemas)
    compile = ({ schema, httpPart }) => (httpPart === 'body' ? bodyAjv : textAjv).compile(schema as AnySchema)
    pool.set(key, compile)
  }
  return compile
}
