/*
 * A provider's answer may echo what it was sent in other shapes than it was sent: an error page that
 * escapes the URL (`bcl&#95;…`, `bcl\u005f…`, `bcl%5F…`), wraps it over lines (with a quoted-printable
 * `=` at each break, or without), or comes in UTF-16 (each character beside a NUL, which the body, read
 * as UTF-8, keeps as U+0000 or U+FFFD). The values are found in the text read as a provider would have
 * meant it, and each is replaced where it stands in the text as it came.
 */

/** One character written escaped: percent-encoded, JSON's `\uXXXX`, an HTML entity by number. */
const ESCAPED = /%([0-9a-f]{2})|\\u([0-9a-f]{4})|&#x([0-9a-f]{1,6});|&#([0-9]{1,7});/iy
const PERCENT = 0x25
const BACKSLASH = 0x5c
const AMPERSAND = 0x26
const EQUALS = 0x3d
// A U+FEFF first (an escaped byte-order mark) is a character like any other: dropped, it shifted every place after it.
const UTF16 = new TextDecoder('utf-16le', { ignoreBOM: true })
/** The prefix a key, claim or secret keeps when it is redacted. */
const PREFIX = /^[a-z]{2,5}_/
/** A value with none of these reads as it is written. */
const SHAPED = /[\s\uFFFD%\\&]|=\r?\n/

/**
 * What stands between the characters of an echoed value and is skipped: a blank or line break, a NUL,
 * U+FFFD, or a quoted-printable soft line break (`=` at the end of a line); its length, or 0.
 */
function gapAt(text: string, i: number): number {
  const code = text.charCodeAt(i)
  if (code === 0x20 || (code >= 0x09 && code <= 0x0d) || code === 0 || code === 0xfffd) return 1
  if (code === EQUALS) {
    const next = text.charCodeAt(i + 1)
    if (next === 0x0a) return 2
    if (next === 0x0d && text.charCodeAt(i + 2) === 0x0a) return 3
    return 0
  }
  return code >= 0xa0 && /\s/.test(text[i]!) ? 1 : 0
}

interface Read {
  /** The characters as a provider meant them, without the gaps. */
  text: string
  /** For each of them, where it starts in the text as it came and where what follows it starts. */
  from: Int32Array
  to: Int32Array
}

function read(text: string): Read {
  const units = new Uint16Array(text.length)
  const from = new Int32Array(text.length)
  const to = new Int32Array(text.length)
  let length = 0
  const take = (unit: number, start: number, end: number) => {
    units[length] = unit
    from[length] = start
    to[length++] = end
  }
  let i = 0
  while (i < text.length) {
    const gap = gapAt(text, i)
    if (gap > 0) {
      i += gap
      continue
    }
    const code = text.charCodeAt(i)
    if (code === PERCENT || code === BACKSLASH || code === AMPERSAND) {
      ESCAPED.lastIndex = i
      const escaped = ESCAPED.exec(text)
      const meant = escaped ? parseInt(escaped[1] ?? escaped[2] ?? escaped[3] ?? escaped[4]!, escaped[4] === undefined ? 16 : 10) : NaN
      if (escaped && meant <= 0x10ffff) {
        const end = i + escaped[0].length
        // A character beyond U+FFFF is two units, both standing where its escape stands.
        for (const unit of String.fromCodePoint(meant)) for (let u = 0; u < unit.length; u++) take(unit.charCodeAt(u), i, end)
        i = end
        continue
      }
    }
    take(code, i, i + 1)
    i++
  }
  return { text: UTF16.decode(units.subarray(0, length)), from, to }
}

/**
 * The text with each of `values` (the claim and the secrets a call was sent with) replaced wherever it
 * stands, as sent or echoed in another shape (see above): by `[redacted]` after its prefix, as keys and
 * claims are redacted elsewhere (`bcl_[redacted]`, `whsec_[redacted]`), or alone. A value is looked for
 * without the `=` that pads its end, which an echo wrapped right after it reads as a soft line break
 * (the padding carries nothing of the key). Values shorter than 16 characters, as meant, are left alone:
 * no secret or claim is that short. `cut`: the text is the first part of a longer one, so the end of it
 * that begins a value (its first characters, the rest cut off) goes too.
 */
export function redactEchoed(text: string, values: readonly (string | null | undefined)[], options: { cut?: boolean } = {}): string {
  const wanted = values.filter((value): value is string => typeof value === 'string')
    .map((value) => {
      const whole = SHAPED.test(value) || value.includes('\u0000') ? read(value).text : value
      const meant = whole.replace(/=+$/, '')
      return { meant, padding: whole.length - meant.length, shown: `${PREFIX.exec(value)?.[0] ?? ''}[redacted]` }
    })
    .filter(({ meant }) => meant.length >= 16)
  // An echo is at least as long as what it echoes (unless cut).
  if (wanted.length === 0 || (!options.cut && text.length < Math.min(...wanted.map(({ meant }) => meant.length)))) return text
  const found = read(text)
  const spans: { start: number; end: number; shown: string }[] = []
  for (const { meant, padding, shown } of wanted) {
    for (let at = found.text.indexOf(meant); at >= 0; at = found.text.indexOf(meant, at + meant.length)) {
      // Its padding goes with it where the echo keeps it.
      let length = meant.length
      while (length < meant.length + padding && found.text[at + length] === '=') length++
      spans.push({ start: found.from[at]!, end: found.to[at + length - 1]!, shown })
    }
  }
  const cutFrom = options.cut ? beginningOfAValue(found, wanted.map(({ meant }) => meant)) : undefined
  if (spans.length === 0 && cutFrom === undefined) return text
  // A value found inside another already replaced (the mac within its claim) is gone with it.
  spans.sort((a, b) => a.start - b.start || b.end - a.end)
  let redacted = ''
  let kept = 0
  for (const { start, end, shown } of spans) {
    if (start < kept) continue
    if (cutFrom !== undefined && start >= cutFrom) break
    redacted += `${text.slice(kept, start)}${shown}`
    kept = end
  }
  return redacted + text.slice(kept, cutFrom === undefined ? undefined : Math.max(kept, cutFrom))
}

/** Where, in the text as it came, its longest end that is the beginning of a value starts; undefined if none is. */
function beginningOfAValue(found: Read, values: string[]): number | undefined {
  let start: number | undefined
  for (const value of values) {
    for (let length = Math.min(value.length - 1, found.text.length); length > 0; length--) {
      if (found.text.endsWith(value.slice(0, length))) {
        const from = found.from[found.text.length - length]!
        if (start === undefined || from < start) start = from
        break
      }
    }
  }
  return start
}
