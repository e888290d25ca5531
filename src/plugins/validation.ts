import { Ajv, type AnySchema, type Options } from 'ajv'
import addFormats from 'ajv-formats'

const common: Options = { removeAdditional: false, useDefaults: true, allErrors: true, strict: false }

function newAjv(options: Options, externalSchemas: Record<string, unknown>): Ajv {
  const ajv = new Ajv({ ...common, ...options })
  addFormats.default(ajv)
  for (const schema of Object.values(externalSchemas)) ajv.addSchema(schema as AnySchema)
  return ajv
}

/**
 * A body is JSON and must carry the right types ("5" is not a number); query strings, path
 * parameters and headers are text, so they are coerced to the schema's types.
 * Given to Fastify as `schemaController.compilersFactory.buildValidator`, so every context uses it.
 */
export function buildValidator(externalSchemas: Record<string, unknown>) {
  const bodyAjv = newAjv({ coerceTypes: false }, externalSchemas)
  const textAjv = newAjv({ coerceTypes: 'array' }, externalSchemas)
  return ({ schema, httpPart }: { schema: unknown; httpPart?: string | undefined }) => (httpPart === 'body' ? bodyAjv : textAjv).compile(schema as AnySchema)
}
