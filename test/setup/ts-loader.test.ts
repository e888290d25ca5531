// The test processes' TypeScript loader (ts-loader.mjs, ts-hooks.mjs): what it resolves, what it
// strips, and the cache prepare.ts fills.
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import t from 'tap'
import { ROOT, TS_LOADER, runCommand } from '../helpers/process.js'
import { cacheFile, compile, fillCache } from './ts-hooks.mjs'

t.test('a test file gets tap from its CommonJS build, and our .ts files for their .js names', async (t) => {
  t.equal(import.meta.resolve('tap'), pathToFileURL(createRequire(import.meta.url).resolve('tap')).href)
  t.match(import.meta.resolve('tap'), /\/dist\/commonjs\/index\.js$/)
  t.equal(typeof t.test, 'function', "its default export is tap's root test")
  t.equal(import.meta.resolve('../../src/app.js'), pathToFileURL(join(ROOT, 'src', 'app.ts')).href)
  t.equal(import.meta.resolve('./ts-hooks.mjs'), pathToFileURL(join(ROOT, 'test', 'setup', 'ts-hooks.mjs')).href, 'a file that exists keeps its name')
  const app = join(ROOT, 'src', 'app.ts')
  t.ok(existsSync(cacheFile(app, await readFile(app, 'utf8'))), "prepare.ts filled the cache with this tree's files")
})

t.test('the cache: filled once, stale outputs and other versions removed, a miss stripped on load', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'baton-ts-cache-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const root = join(dir, 'tree')
  const cache = join(dir, 'cache', 'ts-0123456789ab')
  const abandoned = join(dir, 'cache', 'ts-ba9876543210')
  const inUse = join(dir, 'cache', 'ts-aaaaaaaaaaaa')
  const twoDaysAgo = new Date(Date.now() - 2 * 24 * 60 * 60 * 1000)
  await mkdir(join(root, 'src', 'deep'), { recursive: true })
  await mkdir(abandoned, { recursive: true })
  await mkdir(inUse, { recursive: true })
  await utimes(abandoned, twoDaysAgo, twoDaysAgo)
  await mkdir(cache, { recursive: true })
  await writeFile(join(cache, 'x.mjs.1-0-crashed.tmp'), '')
  await utimes(join(cache, 'x.mjs.1-0-crashed.tmp'), twoDaysAgo, twoDaysAgo)
  await writeFile(join(cache, 'x.mjs.2-0-writing.tmp'), '')
  const file = join(root, 'src', 'deep', 'a.ts')
  await writeFile(file, 'export const answer: number = 42\nexport type Unused = { a: string }\n')
  await writeFile(join(root, 'src', 'types.d.ts'), 'export type X = number\n')

  t.same(await fillCache(root, cache), { files: 1, compiled: 1, removed: 1 }, 'declaration files are not compiled; a crashed write is removed')
  t.ok(existsSync(join(cache, 'x.mjs.2-0-writing.tmp')), 'a write under way is left to its process')
  t.notOk(existsSync(abandoned), 'a folder unused for a day (another esbuild, other options, another checkout) is removed')
  t.ok(existsSync(inUse), 'one in use is kept')
  await rm(join(cache, 'x.mjs.2-0-writing.tmp'))
  t.same(await fillCache(root, cache), { files: 1, compiled: 0, removed: 0 }, 'a second fill has nothing to do')

  await writeFile(file, 'export const answer: number = 43\n')
  t.same(await fillCache(root, cache), { files: 1, compiled: 1, removed: 1 }, "the changed file's old output is removed")
  t.equal((await readdir(cache)).length, 1)

  const late = join(root, 'src', 'late.ts')
  await writeFile(late, 'export function twice(n: number): number { return n * 2 }\n')
  const code = compile(late, cache)
  t.notMatch(code, /: number/, 'types stripped')
  t.match(code, /sourceMappingURL=data:application\/json;base64,/, 'with an inline source map')
  t.ok(existsSync(cacheFile(late, 'export function twice(n: number): number { return n * 2 }\n', cache)), 'and cached')
  t.equal(compile(late, cache), code, 'read back from the cache')
})

t.test('a script run through the loader imports our TypeScript, classes keeping their define semantics', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'baton-ts-loader-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, 'base.ts'), 'export class Base { constructor() { (this as { seen?: unknown }).seen = (this as { field?: unknown }).field } }\n')
  await writeFile(join(dir, 'main.ts'), [
    "import { Base } from './base.js'",
    "import type { Test } from 'tap'",
    'class Child extends Base { field: string | undefined }',
    'const child = new Child() as Child & { seen?: unknown }',
    "console.log(JSON.stringify({ own: Object.hasOwn(child, 'field'), typeOnly: typeof (undefined as Test | undefined) }))"
  ].join('\n'))
  const run = runCommand(process.execPath, [TS_LOADER, join(dir, 'main.ts')], {})
  t.equal(await run.exited, 0, run.output())
  t.same(JSON.parse(run.output()), { own: true, typeOnly: 'undefined' }, 'a declared field is an own property, as under tsc with target ES2022')
})
