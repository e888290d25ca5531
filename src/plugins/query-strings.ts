import type { ErrorObject, ValidateFunction } from 'ajv'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'

/*
 * A query string is read strictly. A parameter a route does not take is refused, not ignored: a typo'd
 * filter (`?statuss=running`) listed everything, which a client could then act on (delete what it
 * lists). And a number is written in decimal digits: Ajv coerces text with JavaScript's Number, which
 * read `limit=1e2` as 100, `1.0` as 1, ` 5` as 5 and `0x10` as 16.
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

/** What a number a query string carries may look like, by its schema's type. */
const NUMBER_TEXT: Record<string, RegExp> = { integer: /^-?[0-9]+$/, number: /^-?[0-9]+(\.[0-9]+)?$/ }
const NUMBER_EXAMPLE: Record<string, string> = { integer: 'e.g. 50', number: 'e.g. 50 or 2.5' }

interface QuerySchema {
  properties?: Record<string, { type?: unknown }>
}

/**
 * The querystring validator wrapped so that it also refuses parameters the schema does not declare and
 * numbers not written plainly, each as an Ajv error (the problems plugin renders them as the rest: a
 * pointer such as /querystring/statuss and what is wrong).
 */
export function strictQuery(schema: unknown, validate: ValidateFunction): ValidateFunction {
  const properties = (schema as QuerySchema | null)?.properties ?? {}
  const names = Object.keys(properties)
  const takes = names.length === 0 ? 'this route takes none' : `this route takes ${names.join(', ')}`
  const numeric = names.flatMap((name) => {
    const type = properties[name]?.type
    return typeof type === 'string' && type in NUMBER_TEXT ? [[name, type] as const] : []
  })
  const single = names.filter((name) => { const type = properties[name]?.type; return typeof type === 'string' && type !== 'array' })
  const strict = ((data: unknown) => {
    const query = (data ?? {}) as Record<string, unknown>
    const unknown = Object.keys(query).filter((name) => !Object.hasOwn(properties, name)).map((name) => unknownParameter(name, takes))
    const repeated = single.filter((name) => Array.isArray(query[name])).map(givenTwice)
    const numbers = numeric.filter(([name, type]) => typeof query[name] === 'string' && !NUMBER_TEXT[type]!.test(query[name]))
      .map(([name, type]) => notPlainNumber(name, type))
    const own = [...unknown, ...repeated, ...numbers]
    const valid = validate(data)
    // A value refused here is not reported again by Ajv ("must be integer" for `limit=abc` or `limit=1&limit=2`).
    const refused = new Set([...repeated, ...numbers].map((error) => error.instancePath))
    const errors = [...own, ...(validate.errors ?? []).filter((error) => !refused.has(error.instancePath))]
    strict.errors = errors.length > 0 ? errors : null
    return valid && own.length === 0
  }) as ValidateFunction
  return strict
}

function unknownParameter(name: string, takes: string): ErrorObject {
  return {
    keyword: 'additionalProperties', instancePath: '', schemaPath: '#/additionalProperties',
    params: { additionalProperty: name }, message: `unknown query parameter (${takes})`
  }
}

function givenTwice(name: string): ErrorObject {
  return {
    keyword: 'type', instancePath: `/${name}`, schemaPath: `#/properties/${name}/type`,
    params: {}, message: 'is given more than once; send it once'
  }
}

function notPlainNumber(name: string, type: string): ErrorObject {
  const what = type === 'integer' ? 'a whole number' : 'a number'
  return {
    keyword: 'type', instancePath: `/${name}`, schemaPath: `#/properties/${name}/type`,
    params: { type }, message: `must be ${what} written in decimal digits (${NUMBER_EXAMPLE[type]})`
  }
}

/** The names a querystring validation refused as unknown, for the problem's detail. */
export function unknownParameters(errors: readonly { keyword?: string; params?: unknown }[]): string[] {
  return errors.flatMap((error) => {
    const name = (error.params as { additionalProperty?: unknown } | undefined)?.additionalProperty
    return error.keyword === 'additionalProperties' && typeof name === 'string' ? [name] : []
  })
}
