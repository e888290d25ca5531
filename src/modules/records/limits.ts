import type { JsonObject } from '../../db/database.js'
import { unprocessable } from '../../errors.js'
import { firstTooDeep, jsonBytes, pointerStep } from '../../lib/json-limits.js'
import { fieldNameProblem } from './fields.js'

/** Levels of objects and arrays in a record's fields, the fields object itself being the first. */
export const FIELDS_MAX_DEPTH = 32
/** A record's fields as compact JSON, in bytes. */
export const FIELDS_MAX_BYTES = 256 * 1024

/**
 * The fields of a create, or the merge patch of an update, within the depth and size limits and with
 * names a record may hold (a patch may still remove any: its null removes; a create's null is stored
 * as the field's value, so its name must be one a record may hold); 422 otherwise.
 */
export function checkFieldsInput(fields: JsonObject | undefined, as: 'create' | 'patch'): void {
  if (fields === undefined) return
  const named = Object.entries(fields).flatMap(([name, value]) => {
    const problem = value === null && as === 'patch' ? undefined : fieldNameProblem(name)
    return problem === undefined ? [] : [{ pointer: `/body/fields${pointerStep(name)}`, detail: problem }]
  })
  if (named.length > 0) {
    throw unprocessable('A record field name may not be empty or contain a comma: a webhook call lists changed fields comma-separated.', named)
  }
  const deep = firstTooDeep(fields, FIELDS_MAX_DEPTH, '/body/fields')
  if (deep !== undefined) {
    throw unprocessable(`Record fields may nest at most ${FIELDS_MAX_DEPTH} levels deep (objects and arrays, the fields object included).`,
      [{ pointer: deep, detail: `nested deeper than ${FIELDS_MAX_DEPTH} levels` }])
  }
  checkFieldsSize(fields)
}

/** The fields a record would have, within the size limit; 422 otherwise. */
export function checkFieldsSize(fields: JsonObject): void {
  const bytes = jsonBytes(fields)
  if (bytes > FIELDS_MAX_BYTES) {
    throw unprocessable(`Record fields may take at most ${FIELDS_MAX_BYTES} bytes (256 KiB) as JSON; these would take ${bytes}.`,
      [{ pointer: '/body/fields', detail: `${bytes} bytes as JSON, more than ${FIELDS_MAX_BYTES}` }])
  }
}
