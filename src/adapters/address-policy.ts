import net from 'node:net'

interface Range {
  base: bigint
  bits: number
  /** What the address is, as it reads after "target address X is ...". */
  is: string
}

const PRIVATE = 'in a private network range'

const IPV4_RANGES: Range[] = [
  v4('169.254.169.254/32', 'a cloud metadata address'),
  v4('0.0.0.0/8', 'in the unspecified ("this network") range'),
  v4('10.0.0.0/8', PRIVATE),
  v4('100.64.0.0/10', 'in the carrier-grade NAT range'),
  v4('127.0.0.0/8', 'a loopback address'),
  v4('169.254.0.0/16', 'a link-local address'),
  v4('172.16.0.0/12', PRIVATE),
  v4('192.0.0.0/24', 'in a reserved range'),
  v4('192.168.0.0/16', PRIVATE),
  v4('198.18.0.0/15', 'in a reserved range'),
  v4('224.0.0.0/4', 'a multicast address'),
  v4('240.0.0.0/4', 'in a reserved range')
]

const IPV6_RANGES: Range[] = [
  v6('::/128', 'unspecified'),
  v6('::1/128', 'a loopback address'),
  v6('fd00:ec2::254/128', 'a cloud metadata address'),
  v6('64:ff9b:1::/48', PRIVATE),
  v6('fc00::/7', PRIVATE),
  v6('fe80::/10', 'a link-local address'),
  v6('fec0::/10', PRIVATE),
  v6('ff00::/8', 'a multicast address')
]

/** IPv6 ranges that carry an IPv4 address in their last 32 bits: judged by that address. */
const IPV4_CARRIERS: Range[] = [
  v6('::ffff:0:0/96', 'IPv4-mapped'),
  v6('::/96', 'IPv4-compatible'),
  v6('64:ff9b::/96', 'NAT64')
]

/**
 * Why the client refuses to call this IP address ("in a private network range", "a loopback address",
 * ...), or undefined when the address is public. Anything that does not parse as an IP is refused.
 */
export function forbiddenRange(address: string): string | undefined {
  const ip = bare(address)
  if (net.isIPv4(ip)) return match(IPV4_RANGES, ipv4ToBigInt(ip), 32)
  if (!net.isIPv6(ip)) return 'not an IP address'
  const value = ipv6ToBigInt(ip)
  const direct = match(IPV6_RANGES, value, 128)
  if (direct) return direct
  if (match(IPV4_CARRIERS, value, 128)) return match(IPV4_RANGES, value & 0xffff_ffffn, 32)
  return undefined
}

/** Targets the operator lets through the guard: exact host names, and address ranges. */
export interface AllowedTargets {
  hosts: ReadonlySet<string>
  v4: readonly Range[]
  v6: readonly Range[]
}

export const NO_ALLOWED_TARGETS: AllowedTargets = { hosts: new Set(), v4: [], v6: [] }

/** Parses `127.0.0.1/32,fd00::/8,provider.internal`; a bare IP counts as a single address. Throws on a bad entry. */
export function parseAllowedTargets(text: string): AllowedTargets {
  const hosts = new Set<string>()
  const ranges: { v4: Range[]; v6: Range[] } = { v4: [], v6: [] }
  for (const entry of text.split(',').map((e) => e.trim()).filter((e) => e !== '')) {
    const [address = '', prefix, ...rest] = entry.split('/')
    const family = net.isIP(address)
    if (family === 0 && prefix === undefined && HOST_NAME.test(entry)) {
      hosts.add(normalHost(entry))
      continue
    }
    const width = family === 4 ? 32 : 128
    const bits = prefix === undefined ? width : /^\d{1,3}$/.test(prefix) ? Number(prefix) : NaN
    if (family === 0 || rest.length > 0 || !(bits >= 0 && bits <= width)) {
      throw new Error(`"${entry}" is neither a host name nor an IP address or CIDR range`)
    }
    const base = family === 4 ? ipv4ToBigInt(address) : ipv6ToBigInt(address)
    const masked = bits === 0 ? 0n : (base >> BigInt(width - bits)) << BigInt(width - bits)
    if (masked !== base) throw new Error(`"${entry}" has host bits set beyond its /${bits} prefix`)
    ranges[family === 4 ? 'v4' : 'v6'].push({ base, bits, is: entry })
  }
  return { hosts, ...ranges }
}

export function isAllowedHost(allowed: AllowedTargets, hostname: string): boolean {
  return allowed.hosts.size > 0 && allowed.hosts.has(normalHost(hostname))
}

/** An IPv4-mapped IPv6 address matches the IPv4 ranges too. */
export function isAllowedAddress(allowed: AllowedTargets, address: string): boolean {
  const ip = bare(address)
  if (net.isIPv4(ip)) return match(allowed.v4, ipv4ToBigInt(ip), 32) !== undefined
  if (!net.isIPv6(ip)) return false
  const value = ipv6ToBigInt(ip)
  if (match(allowed.v6, value, 128) !== undefined) return true
  return value >> 32n === 0xffffn && match(allowed.v4, value & 0xffff_ffffn, 32) !== undefined
}

const HOST_NAME = /^(?=.{1,253}\.?$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i

function normalHost(hostname: string): string {
  return hostname.toLowerCase().replace(/\.$/, '')
}

function bare(address: string): string {
  return address.replace(/^\[(.*)\]$/, '$1').replace(/%.*$/, '')
}

function match(ranges: readonly Range[], value: bigint, width: number): string | undefined {
  return ranges.find((range) => value >> BigInt(width - range.bits) === range.base >> BigInt(width - range.bits))?.is
}

function v4(cidr: string, is: string): Range {
  const [address = '', bits] = cidr.split('/')
  return { base: ipv4ToBigInt(address), bits: Number(bits), is }
}

function v6(cidr: string, is: string): Range {
  const [address = '', bits] = cidr.split('/')
  return { base: ipv6ToBigInt(address), bits: Number(bits), is }
}

function ipv4ToBigInt(address: string): bigint {
  return address.split('.').reduce((value, octet) => (value << 8n) | BigInt(Number(octet)), 0n)
}

/** A valid IPv6 address (net.isIPv6) as a 128-bit number; a dotted IPv4 tail is allowed. */
function ipv6ToBigInt(address: string): bigint {
  let text = address
  const tail = text.slice(text.lastIndexOf(':') + 1)
  if (tail.includes('.')) {
    const v4value = ipv4ToBigInt(tail)
    text = `${text.slice(0, text.length - tail.length)}${(v4value >> 16n).toString(16)}:${(v4value & 0xffffn).toString(16)}`
  }
  const [head = '', rest] = text.split('::')
  const headGroups = head ? head.split(':') : []
  const restGroups = rest ? rest.split(':') : []
  const groups = rest === undefined
    ? headGroups
    : [...headGroups, ...Array<string>(8 - headGroups.length - restGroups.length).fill('0'), ...restGroups]
  return groups.reduce((value, group) => (value << 16n) | BigInt(parseInt(group, 16)), 0n)
}
