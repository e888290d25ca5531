// typebox is 373 ES modules. A test process loads them through two loaders' hooks (tap's processinfo
// and ours, ts-hooks.mjs), each module in a message to the hooks' thread on Node 20: 0.4 s and 0.8 s of
// CPU of every test file, where one bundled module of the same code loads in milliseconds (`npm start`
// bundles it too, scripts/start.mjs). The tests' loader sends `typebox` to the file written here
// before the tests; while it is missing, to the package.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'
import { TYPEBOX_BUNDLE } from './ts-hooks.mjs'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
/** Where the tests' loader sends `typebox`. */
export { TYPEBOX_BUNDLE }

/** Writes the bundle unless one of the installed typebox version is there; returns whether it wrote. */
export async function bundleTypebox(file = TYPEBOX_BUNDLE): Promise<boolean> {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'node_modules', 'typebox', 'package.json'), 'utf8')) as { version: string }
  const banner = `// typebox ${version}, bundled for the tests (test/setup/typebox-bundle.ts)`
  if (existsSync(file) && readFileSync(file, 'utf8').startsWith(`${banner}\n`)) return false
  const { outputFiles } = await build({
    stdin: { contents: "export * from 'typebox'\nexport { default } from 'typebox'\n", resolveDir: ROOT, loader: 'js' },
    bundle: true, write: false, banner: { js: banner }, format: 'esm', platform: 'node', target: 'node20', logLevel: 'warning'
  })
  // Written beside its place and renamed into it, so a test never loads half a file.
  mkdirSync(dirname(file), { recursive: true })
  const writing = `${file}.${process.pid}.tmp`
  try {
    writeFileSync(writing, outputFiles[0]!.text)
    renameSync(writing, file)
  } finally {
    rmSync(writing, { force: true })
  }
  return true
}
