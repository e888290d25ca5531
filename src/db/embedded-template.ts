import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * The dump of an empty PGlite cluster that `npm install` prepares (scripts/prepare-embedded-db.mjs),
 * keyed by PGlite's version: loading it is about four seconds faster than initdb on a first start.
 * Undefined when it is missing, and a new cluster is created as usual.
 */
export function readEmbeddedTemplate(): Blob | undefined {
  try {
    const entry = fileURLToPath(import.meta.resolve('@electric-sql/pglite'))
    const packageDir = entry.slice(0, entry.lastIndexOf('@electric-sql/pglite') + '@electric-sql/pglite'.length)
    const { version } = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8')) as { version: string }
    const file = join(dirname(dirname(packageDir)), '.cache', 'baton', `pglite-${version}-initdb.tar.gz`)
    return existsSync(file) ? new Blob([readFileSync(file)]) : undefined
  } catch {
    return undefined
  }
}
