// `npm start`, `npm run start:api` and `npm run worker`: the server from its TypeScript sources,
// compiled by esbuild into node_modules/.cache/baton/start/<key>/ and run there by plain node.
// Through tsx's loader every module, node_modules' included, passes its hooks: about 0.8 s and
// 1.2 s of CPU of each start. Compiling takes a third of a second and happens only when a source
// changed: the key is a hash of what the output depends on. The folder has the layout of `npm run
// build`'s dist/ (src/, migrations/) and a copy of package.json, so that its files are ES modules
// and the server finds its version and migrations. Packages resolve from node_modules above it, but
// typebox from the folder's own node_modules, bundled into one module: its 373 files, loaded one by
// one, took 0.2 s of each start.
// Arguments (`--role=worker`) pass through to the server. Stack traces point into the sources.
/* global process, console, URL */
import { createHash } from 'node:crypto'
import { copyFileSync, existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const CACHE = join(ROOT, 'node_modules', '.cache', 'baton', 'start')
/**
 * Compiles no start has used for this long are removed: a server reads its own only while it starts
 * (its modules, its migrations), and each start marks its folder as used.
 */
const STALE_MS = 60 * 60 * 1000

/** The TypeScript files under `folder` (declarations aside), relative to the root, sorted. */
function sources(folder) {
  return readdirSync(join(ROOT, folder), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile() && /\.m?ts$/.test(entry.name) && !/\.d\.m?ts$/.test(entry.name))
    .map((entry) => join(entry.parentPath, entry.name).slice(ROOT.length))
    .sort()
}

async function compiled() {
  if (!existsSync(join(ROOT, 'node_modules', 'esbuild', 'package.json'))) {
    throw new Error('esbuild is not installed: run npm install (npm start needs the development dependencies)')
  }
  const files = [...sources('src'), ...sources('migrations')]
  const hash = createHash('sha256')
  const inputs = ['package.json', 'tsconfig.json', 'scripts/start.mjs', 'node_modules/esbuild/package.json', 'node_modules/typebox/package.json']
  for (const file of [...files, ...inputs]) {
    hash.update(`${file}\0`).update(readFileSync(join(ROOT, file))).update('\0')
  }
  const out = join(CACHE, hash.digest('hex').slice(0, 16))
  if (existsSync(out)) {
    const now = new Date()
    utimesSync(out, now, now)
    return out
  }

  // Written beside its place and renamed into it: two starts at once (an API and a worker) each
  // compile, the first rename wins and the other start runs that one.
  mkdirSync(CACHE, { recursive: true })
  const loading = mkdtempSync(`${out}.loading-`)
  const esbuild = await import('esbuild')
  await esbuild.build({
    entryPoints: files.map((file) => join(ROOT, file)),
    outdir: loading,
    outbase: ROOT,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    // Stack traces need the mappings, not the sources' text (which doubled each module's size and the
    // parse node makes of its map as it loads it: 40 ms of a start).
    sourcemap: 'inline',
    sourcesContent: false,
    logLevel: 'warning'
  })
  copyFileSync(join(ROOT, 'package.json'), join(loading, 'package.json'))
  await esbuild.build({
    stdin: { contents: "export * from 'typebox'\nexport { default } from 'typebox'\n", resolveDir: ROOT, loader: 'js' },
    bundle: true,
    outfile: join(loading, 'node_modules', 'typebox', 'index.mjs'),
    banner: { js: '// typebox, bundled by scripts/start.mjs' },
    format: 'esm',
    platform: 'node',
    target: 'node20',
    logLevel: 'warning'
  })
  writeFileSync(join(loading, 'node_modules', 'typebox', 'package.json'), JSON.stringify({ name: 'typebox', type: 'module', exports: './index.mjs' }))
  try {
    renameSync(loading, out)
  } catch (error) {
    rmSync(loading, { recursive: true, force: true })
    if (!existsSync(out)) throw error
  }
  removeStale(out)
  return out
}

/**
 * Removes the compiles no start has used for STALE_MS, and what an interrupted compile or removal
 * left. A folder is renamed away before it is removed, so none is ever seen half removed; another
 * start may be removing the same folders meanwhile.
 */
function removeStale(keep) {
  for (const name of readdirSync(CACHE)) {
    const path = join(CACHE, name)
    if (path === keep) continue
    try {
      if (!name.endsWith('.removing')) {
        if (Date.now() - statSync(path).mtimeMs < STALE_MS) continue
        const removing = `${path}.${process.pid}-${Date.now()}.removing`
        renameSync(path, removing)
        rmSync(removing, { recursive: true, force: true })
      } else {
        rmSync(path, { recursive: true, force: true })
      }
    } catch {
      // Gone meanwhile, or another start's to remove.
    }
  }
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
    if (error.code === 'EEXIST') return // another start linked it meanwhile
    console.warn(`baton: the embedded database's migrated dump does not serve this start (${error.message}); a new data folder runs the migrations`)
  }
}

const out = await compiled()
await shareMigratedDump(out)
process.setSourceMapsEnabled(true)
await import(pathToFileURL(join(out, 'src/server.js')).href)
