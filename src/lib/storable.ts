/**
 * Text from outside (a provider's answer, a mail server's error) as Postgres can store it: a NUL
 * (U+0000), which no text or jsonb value may hold, becomes U+FFFD, as an undecodable byte already
 * does. With a NUL, the write that records a call's or a mail's outcome would fail, and the call or
 * the mail would be made again.
 */
export function storable(text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '\uFFFD') : text
}

/**
 * The first `max` UTF-16 units of a text, one fewer where the cut would split a character in two: a
 * lone half of a surrogate pair is no text Postgres takes in jsonb (and becomes U+FFFD in text).
 */
export function cutText(text: string, max: number): string {
  if (text.length <= max) return text
  const last = text.charCodeAt(max - 1)
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max)
}
