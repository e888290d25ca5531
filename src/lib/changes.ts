/**
 * Whether two values are equal as jsonb compares them: objects by their keys and values in any
 * order (a key whose value is undefined counts as absent), arrays in order, dates by instant.
 */
export function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (a instanceof Date || b instanceof Date) return a instanceof Date && b instanceof Date && a.getTime() === b.getTime()
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((item, i) => sameValue(item, b[i]))
  }
  if (!isObject(a) || !isObject(b)) return false
  const keys = definedKeys(a)
  return keys.length === definedKeys(b).length && keys.every((key) => sameValue(a[key], b[key]))
}

/**
 * Whether writing `changes` would leave `current` as it is: every change given (not undefined)
 * equals the current value. An update that changes nothing keeps its version and updatedAt.
 */
export function changesNothing<T extends object>(current: T, changes: { [K in keyof T]?: unknown }): boolean {
  return Object.entries(changes).every(([key, value]) => value === undefined || sameValue(value, current[key as keyof T]))
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null
}

function definedKeys(value: Record<string, unknown>): string[] {
  return Object.keys(value).filter((key) => value[key] !== undefined)
}
