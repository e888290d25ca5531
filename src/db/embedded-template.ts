import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isMigrationFile, migrationFolder } from './migration-files.js'

/**
 * The dumps `npm install` prepares for a new embedded database (scripts/prepare-embedded-db.mjs), in
 * node_modules/.cache/baton, keyed by PGlite's version: an empty cluster (loading it is about four
 * seconds faster than initdb), gzipped, and, where the install could run the migrations, a migrated
 * one, also keyed by the migrations (a first start then skips them, most of a second), a plain tar.
 */
export interface TemplateFiles {
  /** The empty cluster's dump. */
  initdb: string
  /** The dump of a cluster with every migration in `migrationFolder` run. */
  migrated: string
}

/** The files, for the migrations in `folder`; `migrated` is '' when they cannot be read (only the empty cluster then serves). */
export function templateFiles(folder = migrationFolder): TemplateFiles {
  const entry = fileURLToPath(import.meta.resolve('@electric-sql/pglite'))
  const packageDir = entry.slice(0, entry.lastIndexOf('@electric-sql/pglite') + '@electric-sql/pglite'.length)
  const { version } = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8')) as { version: string }
  const cacheDir = join(dirname(dirname(packageDir)), '.cache', 'baton')
  let digest: string | undefined
  try {
    digest = migrationsDigest(folder)
  } catch {
    digest = undefined
  }
  return {
    initdb: join(cacheDir, `pglite-${version}-initdb.tar.gz`),
    migrated: digest ? join(cacheDir, `pglite-${version}-migrated-${digest}.tar`) : ''
  }
}

/** What the migrations are: their names and contents (a changed or added one makes another dump). */
export function migrationsDigest(folder = migrationFolder): string {
  const hash = createHash('sha256')
  for (const file of readdirSync(folder).filter(isMigrationFile).sort()) {
    hash.update(`${file}\0`).update(readFileSync(join(folder, file))).update('\0')
  }
  return hash.digest('hex').slice(0, 16)
}

/**
 * The dump a new embedded database starts from: the migrated one when it matches the migrations,
 * else the empty cluster; undefined when neither is there, and a new cluster is created as usual.
 */
export function embeddedTemplateFile(): string | undefined {
  let files: TemplateFiles
  try {
    files = templateFiles()
  } catch {
    return undefined
  }
  return [files.migrated, files.initdb].find((f) => existsSync(f))
}
