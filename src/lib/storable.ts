/**
 * Text from outside (a provider's answer, a mail server's error) as Postgres can store it: a NUL
 * (U+0000), which no text or jsonb value may hold, becomes U+FFFD, as an undecodable byte already
 * does. With a NUL, the write that records a call's or a mail's outcome would fail, and the call or
 * the mail would be made again.
 */
export function storable(text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '\uFFFD') : text
}
