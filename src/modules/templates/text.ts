import { Type, type TStringOptions } from 'typebox'

// Postgres text and jsonb cannot hold the NUL character: refusing it in the schema keeps it from becoming a 500.
const NO_NUL = '^[^\\u0000]*$'

export function PlainText(options: TStringOptions = {}) {
  return Type.String({ ...options, pattern: NO_NUL })
}

export function hasNul(text: string): boolean {
  return text.includes('\u0000')
}
