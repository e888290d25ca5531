import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { embeddedHandle } from './connect.js'
import { templateFiles, type TemplateFiles } from './embedded-template.js'
import { migrateToLatest } from './migrate.js'

/**
 * Writes the dump of a migrated embedded cluster beside the empty one (src/db/embedded-template.ts),
 * unless it is there already, and removes the dumps of earlier migrations. Runs on `npm install`
 * (scripts/prepare-embedded-db.mjs). Returns the file.
 */
export async function prepareMigratedTemplate(files: TemplateFiles = templateFiles()): Promise<string> {
  if (!files.migrated) throw new Error('the migrations cannot be read')
  if (existsSync(files.migrated)) return files.migrated
  const { PGlite } = await import('@electric-sql/pglite')
  const initdb = existsSync(files.initdb) ? new Blob([readFileSync(files.initdb)]) : undefined
  const pglite = await PGlite.create('memory://', initdb ? { loadDataDir: initdb } : {})
  const handle = embeddedHandle(pglite)
  let dump: Blob
  try {
    await migrateToLatest(handle)
    // Not compressed: unzipping its 40 MB took a third of a second of each first start.
    dump = await pglite.dumpDataDir('none')
  } finally {
    await handle.close()
  }
  const dir = dirname(files.migrated)
  mkdirSync(dir, { recursive: true })
  writeFileSync(`${files.migrated}.tmp`, Buffer.from(await dump.arrayBuffer()))
  renameSync(`${files.migrated}.tmp`, files.migrated)
  const prefix = basename(files.migrated).replace(/[0-9a-f]+\.tar(\.gz)?$/, '')
  for (const old of readdirSync(dir)) {
    if (old.startsWith(prefix) && old !== basename(files.migrated)) rmSync(join(dir, old), { force: true })
  }
  return files.migrated
}
