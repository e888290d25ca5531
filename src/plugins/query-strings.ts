import type { ErrorObject, ValidateFunction } from 'ajv'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'

/*
 * A query string is read strictly. A parameter a route does not take is refused, not ignored: a typo'd
 * filter (`?statuss=running`) listed everything, which a client could then act on (delete what it
 * lists).
 */

/** A route that declares no query string takes none: it is validated against this, so that one sent is refused too. */
const NO_QUERY = { type: 'object', properties: {} }

/**
 * Gives every API route (under /v1) a querystring schema, an empty one where it declares none, so that
 * its query string is validated (buildValidator, src/plugins/validation.ts). The probes and /metrics are
 * left alone, as the worker's probe server is (src/modules/health/worker-server.ts): they are called by
 * infrastructure, which may add a parameter of its own, and take none that a typo could turn into harm.
 */
async function queryStringsPlugin(app: FastifyInstance): Promise<void> {
  app.addHook('onRoute', (route) => {
    if (!route.url.startsWith('/v1/') || route.schema?.querystring !== undefined) return
    route.schema = { ...route.schema, querystring: NO_QUERY }
  })
}

export default fp(queryStringsPlugin, { name: 'query-strings' })

interface QuerySchema {
  properties?: Record<string, { type?: unknown }>
}

/**
 * The querystring validator wrapped so that it also refuses parameters the schema does not declare, each
 * as an Ajv error (the problems plugin renders them as the rest: a pointer such as /querystring/statuss
 * and what is wrong).
 */
export function strictQuery(schema: unknown, validate: ValidateFunction): ValidateFunction {
  const properties = (schema as QuerySchema | null)?.properties ?? {}
  const names = Object.keys(properties)
  const takes = names.length === 0 ? 'this route takes none' : `this route takes ${names.join(', ')}`
  const strict = ((data: unknown) => {
    const query = (data ?? {}) as Record<string, unknown>
    const unknown = Object.keys(query).filter((name) => !Object.hasOwn(properties, name)).map((name) => unknownParameter(name, takes))
    const valid = validate(data)
    const errors = [...unknown, ...(validate.errors ?? [])]
    strict.errors = errors.length > 0 ? errors : null
    return valid && unknown.length === 0
  }) as ValidateFunction
  return strict
}

function unknownParameter(name: string, takes: string): ErrorObject {
  return {
    keyword: 'additionalProperties', instancePath: '', schemaPath: '#/additionalProperties',
    params: { additionalProperty: name }, message: `unknown query parameter (${takes})`
  }
}

/** The names a querystring validation refused as unknown, for the problem's detail. */
export function unknownParameters(errors: readonly { keyword?: string; params?: unknown }[]): string[] {
  return errors.flatMap((error) => {
    const name = (error.params as { additionalProperty?: unknown } | undefined)?.additionalProperty
    return error.keyword === 'additionalProperties' && typeof name === 'string' ? [name] : []
  })
}
