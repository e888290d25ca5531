import { createHmac, timingSafeEqual } from 'node:crypto'

/*
 * How a provider checks Baton's calls, with nothing but node:crypto. The same steps as the README's
 * snippets: the onOffice scheme for query calls, Standard Webhooks for json calls.
 */

/** PHP's urlencode (RFC 1738): every byte but A-Z a-z 0-9 - _ . as %XX, a space as `+`. */
export function phpUrlEncode(text: string): string {
  return encodeURIComponent(text)
    .replace(/[!'()*~]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%20/g, '+')
}

/** A query call: the URL as received, every parameter but `signature` sorted and re-encoded, HMAC'd. */
export function queryCallValid(receivedUrl: string, secret: string): boolean {
  const url = new URL(receivedUrl)
  const params = [...url.searchParams].filter(([key]) => key !== 'signature')
    .sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
  const text = `${url.protocol}//${url.host}${url.pathname}?` + params.map(([k, v]) => `${phpUrlEncode(k)}=${phpUrlEncode(v)}`).join('&')
  const expected = createHmac('sha256', secret).update(text).digest('hex')
  return sameText(url.searchParams.get('signature') ?? '', expected)
}

/** A json call: `v1,` + base64 HMAC of `id.timestamp.body` with the whsec_ key, any of the listed signatures. */
export function standardWebhookValid(headers: Record<string, string | string[] | undefined>, body: string, secret: string, toleranceSeconds = 300): boolean {
  const id = String(headers['webhook-id'] ?? '')
  const timestamp = String(headers['webhook-timestamp'] ?? '')
  if (!id || !/^\d+$/.test(timestamp) || Math.abs(Date.now() / 1000 - Number(timestamp)) > toleranceSeconds) return false
  const key = secret.startsWith('whsec_') ? Buffer.from(secret.slice('whsec_'.length), 'base64') : Buffer.from(secret)
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64')
  return String(headers['webhook-signature'] ?? '').split(' ').some((entry) => {
    const [version, signature = ''] = entry.split(',')
    return version === 'v1' && sameText(signature, expected)
  })
}

function sameText(given: string, expected: string): boolean {
  return given.length === expected.length && timingSafeEqual(Buffer.from(given), Buffer.from(expected))
}
