import type { JsonObject } from '../../db/database.js'

/** A top-level JSON merge patch as the two jsonb operations it becomes: keys to remove, keys to set. */
export interface FieldsPatch {
  remove: string[]
  set: JsonObject
}

/**
 * A field no record holds: the JSON parser refuses the key in any body (prototype poisoning, 400), and
 * assigning it to an object sets the object's prototype instead of a field.
 */
export function isRefusedFieldName(name: string): boolean {
  return name === '__proto__'
}

/**
 * Why a record may not get a field of this name, if it may not: a query call's `changedFields` lists
 * the names joined by commas (onOffice-compatible), so a name holding one would read as two, and an
 * empty one as an empty entry.
 */
export function fieldNameProblem(name: string): string | undefined {
  if (name === '') return 'a field name may not be empty'
  return name.includes(',') ? 'a field name may not contain a comma' : undefined
}

export function splitMergePatch(patch: JsonObject = {}): FieldsPatch {
  const entries = Object.entries(patch)
  return {
    remove: entries.filter(([, value]) => value === null).map(([key]) => key),
    set: Object.fromEntries(entries.filter(([, value]) => value !== null))
  }
}

/** The sorted names of the top-level fields whose value differs (added, removed or changed). */
export function changedFields(before: JsonObject, after: JsonObject): string[] {
  const names = new Set([...Object.keys(before), ...Object.keys(after)])
  return [...names].filter((name) => !sameField(before, after, name)).sort()
}

function sameField(before: JsonObject, after: JsonObject, name: string): boolean {
  return Object.hasOwn(before, name) === Object.hasOwn(after, name) && jsonEqual(before[name], after[name])
}

/** Deep equality of JSON values; object key order does not matter, array order does. */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((item, i) => jsonEqual(item, b[i]))
  const left = a as JsonObject
  const right = b as JsonObject
  const keys = Object.keys(left)
  return keys.length === Object.keys(right).length && keys.every((key) => Object.hasOwn(right, key) && jsonEqual(left[key], right[key]))
}
