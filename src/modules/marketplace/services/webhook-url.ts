import { refusedLiteralHost, type TargetPolicy } from '../../../adapters/address-policy.js'
import { unprocessable } from '../../../errors.js'

/**
 * Why a webhook URL cannot be stored, or undefined. The text is checked as given, since the URL parser
 * would silently drop tabs and line breaks and trim spaces; a literal IP host in a range webhooks may
 * not reach is refused here, at once. Host names are checked when a call connects, on what they resolve to.
 */
export function webhookUrlProblem(url: string, targets: TargetPolicy): string | undefined {
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
  const refused = refusedLiteralHost(parsed.hostname, targets)
  if (refused) return `the host ${parsed.hostname} is ${refused}, which webhooks may not call (see WEBHOOK_ALLOWED_TARGETS)`
  return undefined
}

export function checkWebhookUrl(url: string | undefined, targets: TargetPolicy): void {
  const problem = url === undefined ? undefined : webhookUrlProblem(url, targets)
  if (problem) throw unprocessable(`The webhook URL is not usable: ${problem}.`, [{ pointer: '/body/webhookUrl', detail: problem }])
}
