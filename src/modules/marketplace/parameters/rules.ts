import type { FieldError } from '../../../errors.js'
import { isContextParameter, PARAMETER_NAME } from './context-parameters.js'
import type { ParameterDefinition } from './schemas.js'

type Value = ParameterDefinition['default']

/** Whether a value fits a parameter definition's type (and, for enums, its allowed values). */
function fitsDefinition(definition: Pick<ParameterDefinition, 'type' | 'allowedValues'>, value: Value): boolean {
  switch (definition.type) {
    case 'string': return typeof value === 'string'
    case 'integer': return typeof value === 'number' && Number.isSafeInteger(value)
    case 'number': return typeof value === 'number' && Number.isFinite(value)
    case 'boolean': return typeof value === 'boolean'
    case 'enum': return typeof value === 'string' && (definition.allowedValues ?? []).includes(value)
  }
}

/** Field errors of a whole definition, with pointers into the request body. */
export function definitionErrors(definition: ParameterDefinition): FieldError[] {
  return [...nameErrors(definition.name), ...allowedValuesErrors(definition), ...defaultErrors(definition)]
}

function nameErrors(name: string): FieldError[] {
  if (!PARAMETER_NAME.test(name)) {
    return [{ pointer: '/body/name', detail: 'must start with a letter and hold only letters, digits and _' }]
  }
  if (isContextParameter(name)) {
    return [{ pointer: '/body/name', detail: `"${name}" is a context parameter Baton sends itself` }]
  }
  return []
}

function allowedValuesErrors({ type, allowedValues }: ParameterDefinition): FieldError[] {
  const error = (detail: string) => [{ pointer: '/body/allowedValues', detail }]
  if (type !== 'enum') return allowedValues === null ? [] : error(`only enum parameters have allowed values, not ${type}`)
  if (allowedValues === null || allowedValues.length === 0) return error('an enum parameter needs at least one allowed value')
  if (new Set(allowedValues).size !== allowedValues.length) return error('allowed values must be unique')
  return []
}

function defaultErrors(definition: ParameterDefinition): FieldError[] {
  if (definition.default === null || fitsDefinition(definition, definition.default)) return []
  const detail = definition.type === 'enum' ? 'must be one of the allowed values' : `must be of type ${definition.type}`
  return [{ pointer: '/body/default', detail }]
}
