/** One step of a JSON pointer (RFC 6901): `~` and `/` escaped. */
export function pointerStep(key: string | number): string {
  return `/${String(key).replace(/~/g, '~0').replace(/\//g, '~1')}`
}

/**
 * The pointer (under `base`) of the first object or array nested deeper than `maxDepth`, counting
 * `value` itself as level 1; undefined when the value stays within. It walks with its own stack, so
 * a value of any depth is safe to check, while JSON.stringify overflows the call stack at a few
 * thousand levels.
 */
export function firstTooDeep(value: unknown, maxDepth: number, base: string): string | undefined {
  const stack: { value: unknown; depth: number; pointer: string }[] = [{ value, depth: 1, pointer: base }]
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    if (typeof item.value !== 'object' || item.value === null) continue
    if (item.depth > maxDepth) return item.pointer
    for (const [key, child] of Object.entries(item.value)) {
      if (typeof child === 'object' && child !== null) stack.push({ value: child, depth: item.depth + 1, pointer: item.pointer + pointerStep(key) })
    }
  }
  return undefined
}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d

/**
 * Whether a valid JSON text nests objects or arrays deeper than `maxDepth`, its outermost value being
 * level 1. It reads the text once, skipping strings, and builds nothing: about 2 ms a MiB, where
 * walking the parsed value took 20 ms; firstTooDeep then finds the pointer.
 */
export function jsonTextNestsDeeperThan(json: string, maxDepth: number): boolean {
  let depth = 0
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i)
    if (c === QUOTE) {
      for (i++; i < json.length; i++) {
        const s = json.charCodeAt(i)
        if (s === BACKSLASH) i++
        else if (s === QUOTE) break
      }
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (++depth > maxDepth) return true
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--
    }
  }
  return false
}

/**
 * The pointer (under `base`) of a number that is not finite, as JSON.parse makes of 1e400; undefined
 * when every number is finite. It walks with its own stack, as firstTooDeep does.
 */
export function firstNonFinite(value: unknown, base: string): string | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : base
  const stack: { value: unknown; pointer: string }[] = [{ value, pointer: base }]
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    if (typeof item.value !== 'object' || item.value === null) continue
    for (const [key, child] of Object.entries(item.value)) {
      if (typeof child === 'number' && !Number.isFinite(child)) return item.pointer + pointerStep(key)
      if (typeof child === 'object' && child !== null) stack.push({ value: child, pointer: item.pointer + pointerStep(key) })
    }
  }
  return undefined
}

/** Bytes of the value as compact JSON; only call it on a value whose depth was checked. */
export function jsonBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value) ?? '', 'utf8')
}

/**
 * Whether a JSON text may hold a lone surrogate once parsed: only a `\uD800`–`\uDFFF` escape can write
 * one, as the UTF-8 bytes of a surrogate are no UTF-8. A text without such an escape is not walked.
 */
export const MAY_HOLD_LONE_SURROGATE = /\\u[dD][89a-fA-F]/

/** Half of a surrogate pair without its other half. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/**
 * Where a parsed JSON value holds half of a surrogate pair alone (`"\ud800"`), as pointers under `base`:
 * each string holding one, or each object whose property name does, in the order of the text (at most
 * `max`). Such a string is no Unicode text: Postgres stored it in a text column as U+FFFD and refused it
 * in jsonb. It walks with its own stack, as firstTooDeep does.
 */
export function loneSurrogates(value: unknown, base: string, max = 20): { pointer: string; detail: string }[] {
  const found: { pointer: string; detail: string }[] = []
  const stack: { value: unknown; pointer: string }[] = [{ value, pointer: base }]
  for (let item = stack.pop(); item !== undefined && found.length < max; item = stack.pop()) {
    if (typeof item.value === 'string') {
      if (LONE_SURROGATE.test(item.value)) found.push({ pointer: item.pointer, detail: 'holds a lone surrogate (\\uD800–\\uDFFF without its pair)' })
    } else if (typeof item.value === 'object' && item.value !== null) {
      const entries = Object.entries(item.value)
      if (entries.some(([key]) => LONE_SURROGATE.test(key))) {
        found.push({ pointer: item.pointer, detail: 'a property name holds a lone surrogate (\\uD800–\\uDFFF without its pair)' })
      }
      for (let i = entries.length - 1; i >= 0; i--) stack.push({ value: entries[i]![1], pointer: item.pointer + pointerStep(entries[i]![0]) })
    }
  }
  return found
}

/**
 * Where a parsed JSON value holds the NUL character, which Postgres stores in neither text nor jsonb, as
 * pointers under `base`: each string holding one, or each object whose property name does, in the order
 * of the text (at most `max`). It walks with its own stack, as firstTooDeep does.
 */
export function nulCharacters(value: unknown, base: string, max = 20): { pointer: string; detail: string }[] {
  const found: { pointer: string; detail: string }[] = []
  const stack: { value: unknown; pointer: string }[] = [{ value, pointer: base }]
  for (let item = stack.pop(); item !== undefined && found.length < max; item = stack.pop()) {
    if (typeof item.value === 'string') {
      if (item.value.includes('\u0000')) found.push({ pointer: item.pointer, detail: 'must not contain the NUL character (U+0000)' })
    } else if (typeof item.value === 'object' && item.value !== null) {
      const entries = Object.entries(item.value)
      if (entries.some(([key]) => key.includes('\u0000'))) found.push({ pointer: item.pointer, detail: 'a property name must not contain the NUL character (U+0000)' })
      for (let i = entries.length - 1; i >= 0; i--) stack.push({ value: entries[i]![1], pointer: item.pointer + pointerStep(entries[i]![0]) })
    }
  }
  return found
}
