// `npm start`, `npm run start:api` and `npm run worker`: the server from its TypeScript sources,
// compiled by esbuild into node_modules/.cache/baton/start/<key>/ and run there by plain node.
// Through tsx's loader every module, node_modules' included, passes its hooks: about 0.8 s and
// 1.2 s of CPU of each start. Compiling takes a third of a second and happens only when a source
// changed: the key is a hash of what the output depends on. The folder has the layout of `npm run
// build`'s dist/ (src/, migrations/) and a copy of package.json, so that its files are ES modules
// and the server finds its version and migrations; packages resolve from node_modules above it.
// Arguments (`--role=worker`) pass through to the server. Stack traces point into the sources.
/* global process, console, URL */
import { createHash } from 'node:crypto'
import { copyFileSync, existsSync, linkSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const CACHE = join(ROOT, 'node_modules', '.cache', 'baton', 'start')
/** Compiles that other starts have left are removed once this old; a running server no longer reads its own after it started. */
const STALE_MS = 60 * 60 * 1000

/** The TypeScript files under `folder` (declarations aside), relative to the root, sorted. */
function sources(folder) {
  return readdirSync(join(ROOT, folder), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile() && /\.m?ts$/.test(entry.name) && !/\.d\.m?ts$/.test(entry.name))
    .map((entry) => join(entry.parentPath, entry.name).slice(ROOT.length))
    .sort()
}

async function compiled() {
  const files = [...sources('src'), ...sources('migrations')]
  const hash = createHash('sha256')
  for (const file of [...files, 'package.json', 'tsconfig.json', 'node_modules/esbuild/package.json']) {
    hash.update(`${file}\0`).update(readFileSync(join(ROOT, file))).update('\0')
  }
  const key = hash.digest('hex').slice(0, 16)
  const out = join(CACHE, key)
  if (existsSync(out)) return out

  // Written beside its place and renamed into it: two starts at once (an API and a worker) each
  // compile, the first rename wins and the other start runs that one.
  const loading = `${out}.${process.pid}.loading`
  rmSync(loading, { recursive: true, force: true })
  const esbuild = await import('esbuild')
  await esbuild.build({
    entryPoints: files.map((file) => join(ROOT, file)),
    outdir: loading,
    outbase: ROOT,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    sourcemap: 'inline',
    logLevel: 'warning'
  })
  copyFileSync(join(ROOT, 'package.json'), join(loading, 'package.json'))
  try {
    renameSync(loading, out)
  } catch (error) {
    rmSync(loading, { recursive: true, force: true })
    if (!existsSync(out)) throw error
  }
  for (const name of readdirSync(CACHE)) {
    const other = join(CACHE, name)
    if (other !== out && Date.now() - statSync(other).mtimeMs > STALE_MS) rmSync(other, { recursive: true, force: true })
  }
  return out
}

/**
 * `npm install` keys the migrated dump of the embedded database (src/db/embedded-template.ts) by the
 * migrations as written; the compiled ones hash differently. The same dump serves both keys.
 */
async function shareMigratedDump(out) {
  try {
    const { templateFiles } = await import(pathToFileURL(join(out, 'src/db/embedded-template.js')).href)
    const written = templateFiles(join(ROOT, 'migrations')).migrated
    const here = templateFiles().migrated
    if (written && here && existsSync(written) && !existsSync(here)) linkSync(written, here)
  } catch (error) {
    console.warn(`baton: the embedded database's migrated dump does not serve this start (${error.message}); a new data folder runs the migrations`)
  }
}

const out = await compiled()
await shareMigratedDump(out)
process.setSourceMapsEnabled(true)
await import(pathToFileURL(join(out, 'src/server.js')).href)
