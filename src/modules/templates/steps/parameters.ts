import type { FieldError } from '../../../errors.js'
import type { ParameterType } from '../../../db/database.js'
import { isContextParameter, PARAMETER_NAME } from '../../marketplace/parameters/context-parameters.js'
import { hasNul } from '../text.js'

export interface ParameterDefinition {
  name: string
  type: ParameterType
  allowedValues: string[] | null
  required: boolean
  /** undefined when the definition has no default. */
  default: unknown
}

export interface ParameterCheck {
  /** The parameters as given, with the defaults of missing optional parameters filled in. */
  parameters: Record<string, unknown>
  errors: FieldError[]
}

/**
 * Checks a step's parameters against its service's definitions and fills in defaults. `saved`: the
 * parameters the step was saved with, for the same service. A required parameter with a default that
 * they lack was added, or made required, after the step was saved (allowed for one with a default): it
 * takes its default, as the step's calls do, rather than refuse every later edit of the step. A new
 * step must pass it, and so must one that passed it before.
 */
export function validateStepParameters(
  definitions: ParameterDefinition[], parameters: Record<string, unknown>, saved?: Record<string, unknown>
): ParameterCheck {
  const byName = new Map(definitions.map((d) => [d.name, d]))
  const errors: FieldError[] = []
  const filled: Record<string, unknown> = {}
  for (const [name, value] of Object.entries(parameters)) {
    const definition = byName.get(name)
    const problem = definition === undefined ? unknownName(definitions) : typeProblem(definition, value)
    if (problem === undefined) filled[name] = value
    else errors.push({ pointer: parameterPointer(name), detail: problem })
  }
  for (const definition of definitions) {
    if (Object.hasOwn(parameters, definition.name)) continue
    const addedSince = saved !== undefined && !Object.hasOwn(saved, definition.name)
    if (definition.required && !(addedSince && definition.default !== undefined)) {
      errors.push({ pointer: parameterPointer(definition.name), detail: 'is required by the service' })
    } else if (definition.default !== undefined) filled[definition.name] = definition.default
  }
  return { parameters: filled, errors }
}

/**
 * A free target declares no parameters: any name a service's definition could have, any string, number
 * or boolean, except the context names Baton sends itself (a step's parameter would never reach the target).
 */
export function validateFreeParameters(parameters: Record<string, unknown>): ParameterCheck {
  const errors: FieldError[] = []
  for (const [name, value] of Object.entries(parameters)) {
    const problem = !PARAMETER_NAME.test(name) ? 'must start with a letter and hold only letters, digits and _'
      : isContextParameter(name) ? 'is a name Baton sends on every call itself: choose another'
      : typeof value === 'string' && hasNul(value) ? 'must not contain the NUL character'
      : undefined
    if (problem) errors.push({ pointer: parameterPointer(name), detail: problem })
  }
  return { parameters, errors }
}

function unknownName(definitions: ParameterDefinition[]): string {
  const known = definitions.map((d) => d.name)
  return known.length === 0
    ? 'is not a parameter of the service, which takes none'
    : `is not a parameter of the service (it takes ${known.join(', ')})`
}

function typeProblem(definition: ParameterDefinition, value: unknown): string | undefined {
  switch (definition.type) {
    case 'string':
      if (typeof value !== 'string') return 'must be a string'
      return hasNul(value) ? 'must not contain the NUL character' : undefined
    case 'integer':
      return Number.isSafeInteger(value) ? undefined : 'must be an integer'
    case 'number':
      return typeof value === 'number' && Number.isFinite(value) ? undefined : 'must be a number'
    case 'boolean':
      return typeof value === 'boolean' ? undefined : 'must be a boolean'
    case 'enum':
      return enumProblem(definition.allowedValues ?? [], value)
  }
}

function enumProblem(allowed: string[], value: unknown): string | undefined {
  if (typeof value === 'string' && allowed.includes(value)) return undefined
  return `must be one of ${allowed.map((v) => JSON.stringify(v)).join(', ')}`
}

/** A JSON pointer to one parameter of the request body (RFC 6901 escaping). */
function parameterPointer(name: string): string {
  return `/body/parameters/${name.replace(/~/g, '~0').replace(/\//g, '~1')}`
}
