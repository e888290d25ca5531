import { unprocessable } from '../errors.js'

/** Whether a text holds nothing but whitespace: as a name, a list would show it as none. */
function isBlank(text: string): boolean {
  return text.trim() === ''
}

/**
 * Refuses (422) a body whose named fields are given as whitespace only; the schema already refuses an
 * empty one. Only what the request sends is looked at: a name stored blank before stays until changed.
 */
export function refuseBlankNames(body: object, fields: readonly string[]): void {
  const values = body as Record<string, unknown>
  const blank = fields.filter((field) => typeof values[field] === 'string' && isBlank(values[field]))
  if (blank.length === 0) return
  throw unprocessable(`${blank.map((field) => `The ${field}`).join(' and ')} may not be blank: give ${blank.length === 1 ? 'it' : 'them'} more than whitespace.`,
    blank.map((field) => ({ pointer: `/body/${field}`, detail: 'must not be blank (whitespace only)' })))
}
