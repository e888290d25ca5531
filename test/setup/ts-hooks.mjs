// The module hooks that let the test processes run our TypeScript (registered by ts-loader.mjs, which
// tap's `node-arg` imports into every test file's process, and runScript into the scripts the tests
// spawn). They do what the tests need of a TypeScript loader and nothing more:
// - a relative `./x.js` imported by a `.ts` file is `./x.ts` when that file exists (NodeNext's rule);
// - a `.ts` file loads as the ES module esbuild strips its types to, with an inline source map (for
//   stack traces and coverage), cached on disk by path and content; prepare.ts fills the cache for the
//   whole tree in one go;
// - `tap` is its CommonJS build and `typebox` the single bundled module typebox-bundle.ts writes before
//   the tests: their ES modules would each be a message to the hooks' thread on Node 20.
// tsx did the first two, at about 0.5 s more CPU for each test process: its own start, and its
// resolver on every module, tap's and the packages' too.
/* global URL, process */
import { createHash, randomUUID } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { threadId } from 'node:worker_threads'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const CACHE_ROOT = join(ROOT, 'node_modules', '.cache', 'baton')

/** Where typebox-bundle.ts writes the bundle. */
export const TYPEBOX_BUNDLE = join(CACHE_ROOT, 'typebox.mjs')

/**
 * esbuild's options: types stripped, nothing else changed. Class fields keep their define semantics,
 * as tsconfig.json's ES2022 target gives them under tsc.
 */
export const TRANSFORM_OPTIONS = Object.freeze({
  loader: 'ts',
  format: 'esm',
  target: 'node20',
  sourcemap: 'inline',
  tsconfigRaw: { compilerOptions: { useDefineForClassFields: true } }
})

const esbuildVersion = () => JSON.parse(readFileSync(join(ROOT, 'node_modules', 'esbuild', 'package.json'), 'utf8')).version
const sha1 = (text) => createHash('sha1').update(text).digest('hex')

/**
 * The cache's folder: a new one for another esbuild or other options, so no stale output is read, and
 * one for each checkout (worktrees may share a node_modules), whose files fillCache keeps.
 */
export const TS_CACHE = join(CACHE_ROOT, `ts-${sha1(`${esbuildVersion()}\0${JSON.stringify(TRANSFORM_OPTIONS)}\0${ROOT}`).slice(0, 12)}`)

/** The cache file of a source file's output. */
export function cacheFile(file, source, cache = TS_CACHE) {
  return join(cache, `${sha1(`${file}\0${source}`)}.mjs`)
}

/** Writes an output beside its place and renames it there, so a process never reads half a file. */
function writeCached(path, code) {
  mkdirSync(dirname(path), { recursive: true })
  const writing = `${path}.${process.pid}-${threadId}-${randomUUID()}.tmp`
  writeFileSync(writing, code)
  renameSync(writing, path)
}

let esbuild
/** The JavaScript of a TypeScript file: from the cache, or stripped now and cached. */
export function compile(file, cache = TS_CACHE) {
  const source = readFileSync(file, 'utf8')
  const cached = cacheFile(file, source, cache)
  try {
    return readFileSync(cached, 'utf8')
  } catch {
    // Not cached yet: stripped here.
  }
  esbuild ??= createRequire(import.meta.url)('esbuild')
  const { code } = esbuild.transformSync(source, { ...TRANSFORM_OPTIONS, sourcefile: file })
  try {
    writeCached(cached, code)
  } catch {
    // A concurrent fillCache removed the half-written file; the next process strips it again.
  }
  return code
}

/** The folders whose TypeScript the tests load. */
const SOURCE_FOLDERS = ['src', 'test', 'scripts', 'migrations', 'clients', 'examples']

const DAY_MS = 24 * 60 * 60 * 1000

/**
 * Fills the cache for every TypeScript file of the tree in one esbuild service, before the test
 * processes start (prepare.ts), and removes what no file of the tree needs any more: outputs of
 * sources since changed or removed, a crashed process's half-written files, and folders unused
 * for a day (another esbuild's, other options', a removed checkout's).
 */
export async function fillCache(root = ROOT, cache = TS_CACHE) {
  const files = SOURCE_FOLDERS.flatMap((folder) => {
    const dir = join(root, folder)
    if (!existsSync(dir)) return []
    return readdirSync(dir, { recursive: true })
      .filter((name) => name.endsWith('.ts') && !name.endsWith('.d.ts') && !name.split(/[\\/]/).includes('node_modules'))
      .map((name) => join(dir, name))
  })
  const wanted = new Set()
  let compiled = 0
  const transformer = createRequire(import.meta.url)('esbuild')
  await Promise.all(files.map(async (file) => {
    const source = await readFile(file, 'utf8')
    const cached = cacheFile(file, source, cache)
    wanted.add(basename(cached))
    if (existsSync(cached)) return
    const { code } = await transformer.transform(source, { ...TRANSFORM_OPTIONS, sourcefile: file })
    writeCached(cached, code)
    compiled += 1
  }))
  let removed = 0
  mkdirSync(cache, { recursive: true })
  utimesSync(cache, new Date(), new Date())
  const now = Date.now()
  const unusedForADay = (path) => now - (statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? now) > DAY_MS
  for (const name of readdirSync(cache)) {
    // A file being written by a test process of another run is left to it.
    if (wanted.has(name) || (name.endsWith('.tmp') && !unusedForADay(join(cache, name)))) continue
    rmSync(join(cache, name), { force: true })
    removed += 1
  }
  const parent = dirname(cache)
  for (const name of readdirSync(parent)) {
    const folder = join(parent, name)
    if (/^ts-[0-9a-f]{12}$/.test(name) && folder !== cache && unusedForADay(folder)) rmSync(folder, { recursive: true, force: true })
  }
  return { files: files.length, compiled, removed }
}

const typeScriptUrl = (url) => url.startsWith('file:') && url.split(/[?#]/, 1)[0].endsWith('.ts')

const isFile = new Map()
function fileExists(url) {
  let exists = isFile.get(url.href)
  if (exists === undefined) {
    exists = statSync(url, { throwIfNoEntry: false })?.isFile() ?? false
    isFile.set(url.href, exists)
  }
  return exists
}

// tap's CommonJS build, whose modules load by require, not each through the hooks as its ES module
// build's do: 0.4 s less CPU for each test file. Its module.exports is the root test, `t`. Resolved
// before the hooks are registered: in-thread hooks would see this require.resolve too.
const TAP_URL = pathToFileURL(createRequire(import.meta.url).resolve('tap')).href

let typeboxUrl
export function resolve(specifier, context, nextResolve) {
  if (specifier === 'tap') return { url: TAP_URL, format: 'commonjs', shortCircuit: true }
  if (specifier === 'typebox') {
    // While the bundle is missing (a test file run without tap's `before`), the package itself.
    typeboxUrl ??= existsSync(TYPEBOX_BUNDLE) ? pathToFileURL(TYPEBOX_BUNDLE).href : null
    if (typeboxUrl !== null) return { url: typeboxUrl, format: 'module', shortCircuit: true }
  }
  const parent = context.parentURL
  if (parent !== undefined && specifier.endsWith('.js') && (specifier.startsWith('./') || specifier.startsWith('../')) && typeScriptUrl(parent)) {
    const url = new URL(`${specifier.slice(0, -3)}.ts`, parent)
    if (fileExists(url)) return { url: url.href, format: 'module', shortCircuit: true }
  }
  return nextResolve(specifier, context)
}

export function load(url, context, nextLoad) {
  if (typeScriptUrl(url)) return { format: 'module', source: compile(fileURLToPath(url)), shortCircuit: true }
  return nextLoad(url, context)
}
