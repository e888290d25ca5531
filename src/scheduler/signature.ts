import { createHmac, timingSafeEqual } from 'node:crypto'

/*
 * The onOffice-compatible webhook signature. The signed text is `scheme://host[:port]/path?` followed
 * by every query parameter except `signature` — the webhook URL's own parameters and the call's —
 * sorted by key in byte order and encoded like PHP's http_build_query (RFC 1738): a space becomes
 * `+`, every byte other than A-Z a-z 0-9 - _ . becomes %XX in upper-case hex. The signature is the
 * lower-case hex HMAC-SHA256 of that text, and the URL sent carries exactly that encoded query with
 * `&signature=…` appended, so a provider can verify with parse_str, ksort, http_build_query and
 * hash_hmac.
 */

export interface SignedUrl {
  url: string
  canonical: string
  signature: string
}

export function signQueryUrl(webhookUrl: string, params: Record<string, string>, secret: string): SignedUrl {
  const base = parsedWebhookUrl(webhookUrl)
  const merged = new Map(base.entries)
  for (const key of Object.keys(params)) merged.set(key, params[key]!)
  merged.delete('signature')
  const canonical = `${base.origin}?${buildQuery(merged)}`
  const signature = hmacHex(secret, canonical)
  return { url: `${canonical}&signature=${signature}`, canonical, signature }
}

interface ParsedWebhookUrl {
  origin: string
  entries: [string, string][]
}

/** Webhook URLs parsed before, by their text: a worker calls the same few URLs over and over. */
const parsedUrls = new Map<string, ParsedWebhookUrl>()
const PARSED_URLS_KEPT = 1000

function parsedWebhookUrl(webhookUrl: string): ParsedWebhookUrl {
  let parsed = parsedUrls.get(webhookUrl)
  if (!parsed) {
    const url = new URL(webhookUrl)
    parsed = { origin: origin(url), entries: queryEntries(url.search) }
    if (parsedUrls.size >= PARSED_URLS_KEPT) parsedUrls.clear()
    parsedUrls.set(webhookUrl, parsed)
  }
  return parsed
}

/** How a provider checks a call: recompute from the received URL and compare in constant time. */
export function verifyQuerySignature(receivedUrl: string, secret: string): boolean {
  const url = new URL(receivedUrl)
  const params = new Map(queryEntries(url.search))
  const signature = params.get('signature') ?? ''
  params.delete('signature')
  const expected = hmacHex(secret, `${origin(url)}?${buildQuery(params)}`)
  return signature.length === expected.length && timingSafeEqual(Buffer.from(signature), Buffer.from(expected))
}

export function buildQuery(params: Map<string, string>): string {
  const keys = [...params.keys()]
  keys.sort(keys.some((key) => BEYOND_UTF16_ORDER.test(key)) ? byUtf8Bytes : byCodeUnits)
  let query = ''
  for (const key of keys) query += `${query === '' ? '' : '&'}${phpUrlEncode(key)}=${phpUrlEncode(params.get(key)!)}`
  return query
}

/**
 * Keys are sorted by their UTF-8 bytes, which is code point order. A string's own order (UTF-16 code
 * units) is the same unless a key holds a surrogate or a character from U+E000 on.
 */
const BEYOND_UTF16_ORDER = /[\ud800-\uffff]/
const byCodeUnits = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)
const byUtf8Bytes = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))

/** Characters encodeURIComponent leaves as they are but PHP encodes, and a space, which PHP writes as `+`. */
const PHP_DIFFERENCES = /[!'()*~]|%20/g
/** Text PHP leaves as it is: A-Z a-z 0-9 - _ . only. */
const UNRESERVED = /^[A-Za-z0-9_.-]*$/
const PHP_ENCODED: Record<string, string> = { '!': '%21', "'": '%27', '(': '%28', ')': '%29', '*': '%2A', '~': '%7E', '%20': '+' }

/**
 * PHP's urlencode: encodeURIComponent (UTF-8, upper-case hex), mended where the two differ (six
 * characters and the space). A lone surrogate, which encodeURIComponent refuses, goes byte by byte
 * (as U+FFFD, as Buffer writes it).
 */
export function phpUrlEncode(text: string): string {
  if (UNRESERVED.test(text)) return text
  try {
    return encodeURIComponent(text).replace(PHP_DIFFERENCES, (c) => PHP_ENCODED[c]!)
  } catch {
    return phpUrlEncodeBytes(text)
  }
}

/** The same, a UTF-8 byte at a time: the reference the fast way is tested against. */
export function phpUrlEncodeBytes(text: string): string {
  let out = ''
  for (const byte of Buffer.from(text, 'utf8')) {
    if (isUnreserved(byte)) out += String.fromCharCode(byte)
    else if (byte === 0x20) out += '+'
    else out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}

function isUnreserved(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) ||
    byte === 0x2d || byte === 0x5f || byte === 0x2e
}

// Like PHP's parse_str for flat keys: `+` and %XX decode, a later duplicate wins.
function queryEntries(search: string): [string, string][] {
  return [...new URLSearchParams(search)]
}

function origin(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`
}

function hmacHex(secret: string, text: string): string {
  return createHmac('sha256', secret).update(text, 'utf8').digest('hex')
}

/*
 * Standard Webhooks (json delivery): `v1,` + base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`.
 * The key is the base64 part of a `whsec_…` secret, which is how Baton generates secrets, so any
 * Standard Webhooks library verifies with the secret as given; any other secret is used as its UTF-8 bytes.
 */
function standardWebhookKey(secret: string): Buffer {
  return secret.startsWith('whsec_') ? Buffer.from(secret.slice('whsec_'.length), 'base64') : Buffer.from(secret, 'utf8')
}

export function standardWebhookSignature(secret: string, id: string, timestamp: number, body: string): string {
  return `v1,${createHmac('sha256', standardWebhookKey(secret)).update(`${id}.${timestamp}.${body}`, 'utf8').digest('base64')}`
}
