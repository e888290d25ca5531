// Runs after `npm install`: creates an empty PGlite cluster once and keeps its dump, so that the
// first `npm start` loads it (about 2 s) instead of running initdb (about 6 s), and a migrated one
// (src/db/embedded-template.ts). It never fails the install: without the dumps, the first start just
// takes longer.
/* global console, URL */
import { Buffer } from 'node:buffer'
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

try {
  const entry = fileURLToPath(import.meta.resolve('@electric-sql/pglite'))
  const packageDir = entry.slice(0, entry.lastIndexOf('@electric-sql/pglite') + '@electric-sql/pglite'.length)
  const { version } = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8'))
  const file = join(dirname(dirname(packageDir)), '.cache', 'baton', `pglite-${version}-initdb.tar.gz`)
  if (!existsSync(file)) {
    const { PGlite } = await import('@electric-sql/pglite')
    const pglite = await PGlite.create('memory://')
    const dump = await pglite.dumpDataDir('gzip')
    await pglite.close()
    mkdirSync(dirname(file), { recursive: true })
    writeFileSync(`${file}.tmp`, Buffer.from(await dump.arrayBuffer()))
    renameSync(`${file}.tmp`, file)
    console.log(`baton: prepared the embedded database's empty cluster (${file})`)
  }
} catch (error) {
  console.warn(`baton: could not prepare the embedded database ahead (${error.message}); the first start will create it`)
}

// With the development dependencies (tsx) and the sources here, also a migrated cluster, keyed by the
// migrations: the first start then skips them. Without them (a production install, the image's first
// stage) the first start runs the migrations.
if (existsSync(new URL('../src/db/prepare-embedded-template.ts', import.meta.url)) && existsSync(new URL('../migrations', import.meta.url))) {
  let tsx = false
  try {
    // As `node --import tsx` does, for every import and require: the migrator loads the migrations itself.
    await import('tsx')
    tsx = true
  } catch {
    // A production install: no tsx.
  }
  if (tsx) {
    try {
      const { prepareMigratedTemplate } = await import('../src/db/prepare-embedded-template.ts')
      const { templateFiles } = await import('../src/db/embedded-template.ts')
      if (!existsSync(templateFiles().migrated)) console.log(`baton: prepared the embedded database's migrated cluster (${await prepareMigratedTemplate()})`)
    } catch (error) {
      console.warn(`baton: could not prepare a migrated embedded database (${error.message}); the first start will run the migrations`)
    }
  }
}
