// typebox is 373 ES modules. A test process loads it through two loader hooks (tap's processinfo and
// tsx), one message to the hooks' thread per module: about 0.3 s and 0.6 s of CPU of every test
// file and of every server a test spawns, where one bundled module of the same code takes
// milliseconds. The test processes (tap's `test-env`) point tsx at tsconfig.test.json, whose `paths`
// send `typebox` to the bundle written here; while it is missing, tsx falls back to the package.
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
  mkdirSync(dirname(file), { recursive: true })
  // Written beside its place and renamed into it, so a test never loads half a file.
  const writing = `${file}.${process.pid}.tmp`
  try {
    const { outputFiles } = await build({
      stdin: { contents: "export * from 'typebox'\nexport { default } from 'typebox'", resolveDir: ROOT, loader: 'js' },
      bundle: true, write: false, format: 'esm', platform: 'node', target: 'node20', logLevel: 'warning'
    })
    writeFileSync(writing, `${banner}\n${outputFiles[0]!.text}`)
    renameSync(writing, file)
  } finally {
    rmSync(writing, { force: true })
  }
  return true
}
