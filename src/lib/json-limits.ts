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
