/** Text to match literally inside an ILIKE pattern: its backslashes, % and _ escaped. */
export function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`)
}
