import { isUtf8 } from 'node:buffer'
import { NO_ALLOWED_TARGETS, refusedLiteralHost, type TargetPolicy } from '../../../adapters/address-policy.js'
import { unprocessable } from '../../../errors.js'
import { CONTEXT_PARAMETERS } from '../parameters/context-parameters.js'

export const WEBHOOK_URL_RULE = 'An http or https URL with a host, without credentials and not on port 0; for query delivery, none of its own query ' +
  'keys may be one that PHP\'s parse_str changes (empty, or with a space, . or [ or NUL) or one of the parameters Baton sets on each call, nor may its query hold %-escapes that are not UTF-8, else 422'

/**
 * Why a webhook URL cannot be stored, or undefined. The text is checked as given, since the URL parser
 * would silently drop tabs and line breaks and trim spaces; a literal IP host in a range webhooks may
 * not reach is refused here, at once. Host names are checked when a call connects, on what they resolve to.
 * A tenant's own target (a step's free target) gets no private address the operator allowed for
 * marketplace providers (WEBHOOK_ALLOWED_TARGETS), as its calls get none.
 */
export function webhookUrlProblem(url: string, targets: TargetPolicy, whose: 'provider' | 'tenant' = 'provider'): string | undefined {
  if (/[\p{Cc}\p{Cf}]/u.test(url)) return 'the URL must not contain control characters (such as CR, LF, TAB or NUL)'
  if (url.trim() !== url) return 'the URL must not start or end with spaces'
  if (/\s/.test(url)) return 'the URL must not contain spaces; percent-encode them as %20'
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return 'not a valid absolute URL'
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return 'the scheme must be http or https'
  if (parsed.hostname === '') return 'the URL needs a host'
  if (parsed.username !== '' || parsed.password !== '') return 'the URL must not contain a user name or password'
  // Node's client reads port 0 as "none" and calls the scheme's default port, signed for another URL than it reaches.
  if (parsed.port === '0') return 'the port must be between 1 and 65535 (a call to port 0 would go to the default port)'
  const tenant = whose === 'tenant'
  const refused = refusedLiteralHost(parsed.hostname, tenant ? { ...targets, allowed: NO_ALLOWED_TARGETS } : targets)
  if (!refused) return undefined
  return `the host ${parsed.hostname} is ${refused}, which ${tenant
    ? 'a step\'s own target may not call (WEBHOOK_ALLOWED_TARGETS opens addresses to marketplace services only)'
    : 'webhooks may not call (see WEBHOOK_ALLOWED_TARGETS)'}`
}

export function checkWebhookUrl(url: string | undefined, targets: TargetPolicy): void {
  const problem = url === undefined ? undefined : webhookUrlProblem(url, targets)
  if (problem) throw unprocessable(`The webhook URL is not usable: ${problem}.`, [{ pointer: '/body/webhookUrl', detail: problem }])
}

/**
 * Why a PHP provider could not verify a query call to this (valid) URL, or undefined. The signature covers
 * the URL's own query keys as Baton reads them, but PHP's parse_str, and so $_GET, changes some before
 * the provider sorts and re-encodes them: it cuts a key at a NUL byte, reads `[` as an array, drops
 * leading spaces, turns other spaces and dots into `_`, and drops a key left empty (`+` is a space).
 */
export function phpQueryKeyProblem(url: string): string | undefined {
  const keys = [...new URL(url).searchParams.keys()]
  for (const key of keys) {
    const change = phpKeyChange(key)
    if (change) return `${change}, so a provider verifying with PHP could not check the signature; rename that parameter or leave it out`
  }
  const disorder = phpOrderChange(keys)
  if (disorder) return `${disorder}, so a provider verifying with PHP's ksort() could not check the signature; rename those parameters`
  return undefined
}

/**
 * A number as PHP 8 reads a numeric string (an integer key among them), whitespace around it included
 * (a tab, a line break: keys with spaces or dots are refused before). Number() reads the same.
 */
const PHP_NUMERIC = /^[\t\n\v\f\r]*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[\t\n\v\f\r]*$/

/**
 * Two of the URL's own keys that PHP's ksort() (its default flags, as onOffice's providers call it) puts
 * in another order than the signature's byte order, or undefined: it compares two numeric keys (`9`,
 * `10`, `1e3`) as numbers, and sorts stably. Any other pair, Baton's own parameters among them, it
 * compares as strings.
 */
function phpOrderChange(keys: string[]): string | undefined {
  const numeric = [...new Set(keys)].filter((key) => PHP_NUMERIC.test(key))
  for (const [i, a] of numeric.entries()) {
    for (const b of numeric.slice(i + 1)) {
      const byBytes = Math.sign(Buffer.compare(Buffer.from(a), Buffer.from(b)))
      const byNumbers = Math.sign(Number(a) - Number(b))
      // Equal numbers (`10`, `1e1`) keep the order they came in, which is the signature's.
      if (byNumbers !== 0 && byNumbers !== byBytes) {
        return `PHP's ksort() orders the query keys ${JSON.stringify(a)} and ${JSON.stringify(b)} by their numbers, not by their bytes as the signature does`
      }
    }
  }
  return undefined
}

/**
 * Why a query call to this (valid) URL would not carry its own query as written, or undefined: a key or
 * value whose %-escapes are not UTF-8 (Latin-1, as in `K%F6ln`) is read by the URL parser, as by a
 * provider's Node.js or Python check, with U+FFFD for each such byte, and is signed and sent that way.
 */
function queryEncodingProblem(url: string): string | undefined {
  for (const pair of new URL(url).search.slice(1).split('&')) {
    if (!isUtf8(percentDecoded(pair))) {
      return `the query's ${JSON.stringify(pair)} is not UTF-8 once its %-escapes are decoded, and a call would carry U+FFFD ` +
        '(%EF%BF%BD) in place of each such byte; percent-encode the text as UTF-8 (ö as %C3%B6)'
    }
  }
  return undefined
}

/** A URL's query text (ASCII: the URL parser escapes the rest as UTF-8) as the bytes its %-escapes stand for. */
function percentDecoded(text: string): Uint8Array {
  const bytes: number[] = []
  for (let i = 0; i < text.length; i++) {
    const escape = text[i] === '%' ? /^[0-9A-Fa-f]{2}$/.exec(text.slice(i + 1, i + 3)) : null
    if (escape) {
      bytes.push(parseInt(escape[0], 16))
      i += 2
    } else bytes.push(text.charCodeAt(i))
  }
  return Uint8Array.from(bytes)
}

function phpKeyChange(key: string): string | undefined {
  const shown = JSON.stringify(key)
  if (key.includes('\0')) return `PHP cuts the query key ${shown} at its NUL byte`
  if (key.includes('[')) return `PHP reads the query key ${shown} as an array entry (or, with no ] after it, its [ as _)`
  const read = key.replace(/^ +/, '').replace(/[ .]/g, '_')
  if (read === '') return `PHP drops the query key ${shown}, as it has no name once leading spaces go`
  if (read !== key) return `PHP reads the query key ${shown} as ${JSON.stringify(read)} (spaces and dots become _, leading spaces go)`
  return undefined
}

/**
 * Why the URL's own query would not reach a provider as written in a query call, or undefined: Baton
 * sets its own parameters (timestamp, deliveryId, signature, …) on the call, replacing a key of the
 * URL's with the same name, and the provider would never see the URL's value.
 */
function ownParameterProblem(url: string): string | undefined {
  const taken = [...new URL(url).searchParams.keys()].find((key) => (CONTEXT_PARAMETERS as readonly string[]).includes(key))
  return taken === undefined ? undefined
    : `the query key ${JSON.stringify(taken)} is one of the parameters Baton sets on each call, which would replace its value; rename it`
}

/** Why a query call to this (valid) URL would not carry its own query as written and verifiable, or undefined. */
export function queryCallProblem(url: string): string | undefined {
  return phpQueryKeyProblem(url) ?? queryEncodingProblem(url) ?? ownParameterProblem(url)
}

/** A query call's URL must verify in PHP; a refusal names the field that asked for it. */
export function checkQueryKeys(url: string, pointer: string): void {
  const problem = queryCallProblem(url)
  if (problem) throw unprocessable(`The webhook URL cannot be used for query delivery: ${problem}.`, [{ pointer, detail: problem }])
}
