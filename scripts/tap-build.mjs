// `npm test` runs this first (`pretest`). tap builds its test class for the plugins package.json's
// `tap.plugin` lists the first time it runs after an install, but it starts that run's test processes
// with the loaders of the class it had before, tap's default one: tap's TypeScript plugin (ts-node)
// and @tapjs/mock's hook in front of every module of every test file, beside tsx. That first run took
// 480–500 s instead of 290–315 s. Building first avoids it; a stamp keyed by tap's version and the
// plugin list skips the build (about 7 s) until either changes.
/* global console, URL */
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const read = (file) => JSON.parse(readFileSync(join(ROOT, file), 'utf8'))

const { version } = read('node_modules/tap/package.json')
const plugins = read('package.json').tap?.plugin ?? []
const key = createHash('sha256').update(JSON.stringify([version, plugins])).digest('hex').slice(0, 16)
const stamp = join(ROOT, 'node_modules', '.cache', 'baton', `tap-build-${key}`)
if (!existsSync(stamp)) {
  console.log("baton: building tap's test class for the plugins in package.json (once after an install)")
  const { status, error } = spawnSync(join(ROOT, 'node_modules', '.bin', 'tap'), ['build'], { cwd: ROOT, stdio: 'inherit' })
  if (error || status !== 0) {
    // tap builds it itself then, and only that run is slower.
    console.warn(`baton: tap build failed (${error?.message ?? `exit ${status}`}); the first run of the suite will be slower`)
  } else {
    mkdirSync(join(ROOT, 'node_modules', '.cache', 'baton'), { recursive: true })
    writeFileSync(stamp, '')
  }
}
