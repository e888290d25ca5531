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

/**
 * The text of bytes of UTF-8 cut off after the last of them, less a character the cut split: its first
 * bytes alone would read as U+FFFD, a character never sent, three bytes long where one or two were kept.
 */
export function cutUtf8(head: Buffer): string {
  // The last byte that starts a character (not 10xxxxxx), among the last four, and the length it announces.
  for (let i = head.length - 1; i >= Math.max(0, head.length - 4); i--) {
    const byte = head[i]!
    if ((byte & 0xc0) === 0x80) continue
    const length = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1
    return head.subarray(0, head.length - i < length ? i : head.length).toString('utf8')
  }
  return head.toString('utf8')
}

// Tabs and every character that breaks a line: CR, LF, VT, FF, NEL, LS and PS.
const LINE_BREAKS = /[\t\n\v\f\r\u0085\u2028\u2029]+/g

/** A text on one line, as a mail's subject must be: each run of line breaks and tabs becomes a space. */
export function oneLine(text: string): string {
  return text.replace(LINE_BREAKS, ' ')
}
