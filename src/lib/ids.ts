import { randomBytes } from 'node:crypto'

let lastMs = 0
let sequence = 0

/**
 * Random bytes drawn from a pool refilled 4 KiB at a time: a scheduler batch makes several ids per
 * step, and a call to randomBytes for each 16 bytes cost more than the rest of newId.
 */
let pool = Buffer.alloc(0)
let poolOffset = 0
function randomSlice(size: number): Buffer {
  if (poolOffset + size > pool.length) {
    pool = randomBytes(4096)
    poolOffset = 0
  }
  const slice = pool.subarray(poolOffset, poolOffset + size)
  poolOffset += size
  return slice
}

/**
 * A UUIDv7: time-ordered, so ids sort by creation and serve as keyset cursors. Within one process,
 * ids made in the same millisecond (or with a clock that went back) keep their order through a
 * 12-bit sequence in the rand_a field (RFC 9562, method 1).
 */
export function newId(now = Date.now()): string {
  if (now > lastMs) {
    lastMs = now
    sequence = randomSlice(2).readUInt16BE() & 0x3ff
  } else {
    sequence += 1
    if (sequence > 0xfff) {
      lastMs += 1
      sequence = 0
    }
  }
  const bytes = randomSlice(16)
  bytes.writeUIntBE(lastMs, 0, 6)
  bytes[6] = 0x70 | (sequence >> 8)
  bytes[7] = sequence & 0xff
  bytes[8] = 0x80 | (bytes[8]! & 0x3f)
  const hex = bytes.toString('hex')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}
