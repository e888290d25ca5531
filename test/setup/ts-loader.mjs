// Imported into every test file's process (tap's `node-arg` in package.json): registers the hooks that
// load our TypeScript (ts-hooks.mjs). Node 24.13 and 25.1 and later run them on the process's own
// thread (`module.registerHooks`); earlier versions on the loader thread (`module.register`). tap's
// processinfo draws the same line: its maintainers found the in-thread hooks unreliable before.
/* global process */
import module from 'node:module'

const [major, minor] = process.versions.node.split('.').map(Number)
const inThread = typeof module.registerHooks === 'function' &&
  (typeof module.register !== 'function' || major > 25 || (major === 25 && minor >= 1) || (major === 24 && minor >= 13))

// Stack traces point into the TypeScript, in the scripts the tests spawn too (tap turns this on for
// the test files themselves).
process.setSourceMapsEnabled(true)

if (inThread) {
  const { resolve, load } = await import('./ts-hooks.mjs')
  module.registerHooks({ resolve, load })
} else {
  module.register('./ts-hooks.mjs', import.meta.url)
}
