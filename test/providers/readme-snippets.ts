import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ROOT } from '../helpers/process.js'

/** The README's "For providers" section, up to the next top-level heading. */
export async function providersSection(): Promise<string> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8')
  const start = readme.indexOf('\n## For providers\n')
  if (start < 0) throw new Error('the README has no "For providers" section')
  const end = readme.indexOf('\n## ', start + 1)
  return readme.slice(start, end < 0 ? undefined : end)
}

/** The text under a `### ` heading that starts with these words, up to the next heading. */
export function subsection(section: string, heading: string): string {
  const start = section.indexOf(`\n### ${heading}`)
  if (start < 0) throw new Error(`the README has no "### ${heading}" subsection`)
  const end = section.indexOf('\n### ', start + 1)
  return section.slice(start, end < 0 ? undefined : end)
}

/** The fenced code blocks of one language, in order. */
export function codeBlocks(text: string, language: string): string[] {
  return [...text.matchAll(new RegExp('```' + language + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]!)
}

export function onlyBlock(text: string, language: string): string {
  const blocks = codeBlocks(text, language)
  if (blocks.length !== 1) throw new Error(`expected one \`\`\`${language} block, found ${blocks.length}`)
  return blocks[0]!
}
