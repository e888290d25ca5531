// typebox is 373 ES modules. A test process loads them through two loader hooks (tap's processinfo
// and tsx), each module in a message to the hooks' thread: 0.4 s and 0.8 s of CPU of every test file
// and of every server a test spawns under tsx, where one bundled module of the same code loads in
// milliseconds (`npm start` bundles it too, scripts/start.mjs). Tap's `test-env` points tsx at
// tsconfig.test.json, whose `paths` send `typebox` to the file written here before the tests; while
// it is missing, tsx falls back to the package.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
/** Where tsconfig.test.json's `paths` send `typebox`. */
export const TYPEBOX_BUNDLE = join(ROOT, 'node_modules', '.cache', 'baton', 'typebox.mjs')

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
