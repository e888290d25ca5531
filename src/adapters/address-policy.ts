import net from 'node:net'
import ipaddr from 'ipaddr.js'

/*
 * Which IP addresses a webhook may reach. Refused: every range of the IANA special-purpose registries
 * (IPv4 and IPv6) and multicast; in IPv6 everything outside global unicast 2000::/3. IPv4 carried in
 * IPv6 is judged as that IPv4 address: IPv4-mapped ::ffff:0:0/96, IPv4-compatible ::/96 and the NAT64
 * well-known prefix 64:ff9b::/96 (which DNS64 hands out for public hosts). 6to4 2002::/16 and Teredo
 * 2001::/32 reach an embedded IPv4 address through relays and are refused outright. ipaddr.js parses;
 * only strict forms get that far (net.isIP), as the URL parser has normalised any other.
 */

type Address = ipaddr.IPv4 | ipaddr.IPv6

interface Range {
  cidr: [Address, number]
  /** What the address is, as it reads after "target address X is ...". */
  is: string
}

const PRIVATE = 'in a private network range'
const METADATA = 'a cloud metadata address'
const DOCUMENTATION = 'in a documentation range'
const range = (cidr: string, is: string): Range => ({ cidr: ipaddr.parseCIDR(cidr), is })

// Most specific first: the first match names the address.
const IPV4_REFUSED: Range[] = [
  range('169.254.169.254/32', METADATA),
  range('100.100.100.200/32', METADATA),
  range('0.0.0.0/8', 'in the unspecified ("this network") range'),
  range('10.0.0.0/8', PRIVATE),
  range('100.64.0.0/10', 'in the carrier-grade NAT range'),
  range('127.0.0.0/8', 'a loopback address'),
  range('169.254.0.0/16', 'a link-local address'),
  range('172.16.0.0/12', PRIVATE),
  range('192.0.0.0/24', 'in the IETF protocol assignments range'),
  range('192.0.2.0/24', `${DOCUMENTATION} (TEST-NET-1)`),
  range('192.31.196.0/24', 'in an AS112 range'),
  range('192.52.193.0/24', 'in the AMT range'),
  range('192.88.99.0/24', 'in the deprecated 6to4 relay range'),
  range('192.168.0.0/16', PRIVATE),
  range('192.175.48.0/24', 'in an AS112 range'),
  range('198.18.0.0/15', 'in the benchmarking range'),
  range('198.51.100.0/24', `${DOCUMENTATION} (TEST-NET-2)`),
  range('203.0.113.0/24', `${DOCUMENTATION} (TEST-NET-3)`),
  range('224.0.0.0/4', 'a multicast address'),
  range('255.255.255.255/32', 'the broadcast address, in a reserved range'),
  range('240.0.0.0/4', 'in a reserved range')
]

const IPV6_REFUSED: Range[] = [
  range('::/128', 'the unspecified address'),
  range('::1/128', 'a loopback address'),
  range('fd00:ec2::254/128', METADATA),
  range('100::/64', 'in the discard-only range'),
  range('64:ff9b:1::/48', 'in the local-use NAT64 range, private'),
  range('2001::/32', 'a Teredo address, which tunnels to an IPv4 address'),
  range('2001:db8::/32', DOCUMENTATION),
  range('2001::/23', 'in the IETF protocol assignments range'),
  range('2002::/16', 'a 6to4 address, which tunnels to an IPv4 address'),
  range('2620:4f:8000::/48', 'in an AS112 range'),
  range('3fff::/20', DOCUMENTATION),
  range('fc00::/7', `${PRIVATE} (unique local)`),
  range('fe80::/10', 'a link-local address'),
  range('fec0::/10', `${PRIVATE} (site-local)`),
  range('ff00::/8', 'a multicast address')
]

const GLOBAL_UNICAST = ipaddr.parseCIDR('2000::/3')
const MAPPED = ipaddr.parseCIDR('::ffff:0:0/96')
const COMPATIBLE = ipaddr.parseCIDR('::/96')
const NAT64 = ipaddr.parseCIDR('64:ff9b::/96')
const SIX_TO_FOUR = ipaddr.parseCIDR('2002::/16')

/**
 * Why the client refuses to call this IP address ("in a private network range", "a loopback address",
 * ...), or undefined when the address is public. Anything that does not parse as an IP is refused.
 */
export function forbiddenRange(address: string): string | undefined {
  const ip = parse(address)
  if (ip === undefined) return 'not an IP address'
  if (ip.kind() === 'ipv4') return firstMatch(IPV4_REFUSED, ip)
  const v6 = ip as ipaddr.IPv6
  const direct = firstMatch(IPV6_REFUSED, v6)
  if (v6.match(SIX_TO_FOUR)) return `${direct}${embeddedProblem(sixToFourAddress(v6))}`
  if (direct) return direct
  const embedded = embeddedIPv4(v6)
  if (embedded) return firstMatch(IPV4_REFUSED, embedded) ?? (v6.match(COMPATIBLE) ? 'a deprecated IPv4-compatible address' : undefined)
  return v6.match(GLOBAL_UNICAST) ? undefined : 'outside the global unicast range 2000::/3'
}

/** The IPv4 address an IPv6 address stands for: mapped, compatible or NAT64 (well-known prefix). */
function embeddedIPv4(ip: ipaddr.IPv6): ipaddr.IPv4 | undefined {
  if (!ip.match(MAPPED) && !ip.match(COMPATIBLE) && !ip.match(NAT64)) return undefined
  return ipaddr.IPv4.parse(ip.toByteArray().slice(12).join('.'))
}

function sixToFourAddress(ip: ipaddr.IPv6): ipaddr.IPv4 {
  return ipaddr.IPv4.parse(ip.toByteArray().slice(2, 6).join('.'))
}

function embeddedProblem(v4: ipaddr.IPv4): string {
  const problem = firstMatch(IPV4_REFUSED, v4)
  return problem ? `, here ${v4.toString()}: ${problem}` : ''
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
    const base = ipaddr.parse(address)
    if (hasHostBits(base, bits)) throw new Error(`"${entry}" has host bits set beyond its /${bits} prefix`)
    ranges[family === 4 ? 'v4' : 'v6'].push({ cidr: [base, bits], is: entry })
  }
  return { hosts, ...ranges }
}

export function isAllowedHost(allowed: AllowedTargets, hostname: string): boolean {
  return allowed.hosts.size > 0 && allowed.hosts.has(normalHost(hostname))
}

/** An IPv6 address that stands for an IPv4 one (mapped, NAT64) matches the IPv4 ranges too. */
export function isAllowedAddress(allowed: AllowedTargets, address: string): boolean {
  const ip = parse(address)
  if (ip === undefined) return false
  if (ip.kind() === 'ipv4') return firstMatch(allowed.v4, ip) !== undefined
  if (firstMatch(allowed.v6, ip) !== undefined) return true
  const embedded = embeddedIPv4(ip as ipaddr.IPv6)
  return embedded !== undefined && firstMatch(allowed.v4, embedded) !== undefined
}

/** What the operator allows: everything private (development), or the listed targets only. */
export interface TargetPolicy {
  allowPrivateNetworks: boolean
  allowed: AllowedTargets
}

/**
 * Why a call to this URL host would be refused before any lookup: a literal IP address in a refused
 * range that the policy does not allow. Host names are judged at connect time, on what they resolve to.
 */
export function refusedLiteralHost(hostname: string, policy: TargetPolicy): string | undefined {
  const host = bare(hostname)
  if (policy.allowPrivateNetworks || net.isIP(host) === 0 || isAllowedAddress(policy.allowed, host)) return undefined
  return forbiddenRange(host)
}

const HOST_NAME = /^(?=.{1,253}\.?$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i

function normalHost(hostname: string): string {
  return hostname.toLowerCase().replace(/\.$/, '')
}

/** Without URL brackets and IPv6 zone. */
function bare(address: string): string {
  return address.replace(/^\[(.*)\]$/, '$1').replace(/%.*$/, '')
}

/**
 * Only the strict forms net.isIP accepts: ipaddr.js would also read "127.1" or "0x7f.1". A dotted
 * IPv4 tail of an IPv6 address is spelled in hex first, as ipaddr.js reads "::a.b.c.d" as IPv4-mapped.
 */
function parse(address: string): Address | undefined {
  const ip = bare(address)
  const family = net.isIP(ip)
  if (family === 0) return undefined
  return ipaddr.parse(family === 6 ? ip.replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, hexTail) : ip)
}

function hexTail(_: string, ...octets: string[]): string {
  const [a, b, c, d] = octets.slice(0, 4).map(Number) as [number, number, number, number]
  return `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
}

function firstMatch(ranges: readonly Range[], ip: Address): string | undefined {
  return ranges.find((r) => r.cidr[0].kind() === ip.kind() && ip.match(r.cidr))?.is
}

function hasHostBits(ip: Address, bits: number): boolean {
  return ip.toByteArray().some((byte, i) => {
    const kept = Math.min(8, Math.max(0, bits - i * 8))
    return (byte & (0xff >> kept)) !== 0
  })
}
