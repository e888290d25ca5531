// Imported into every test file's process (tap's `node-arg` in package.json): registers the hooks that
// load our TypeScript (ts-hooks.mjs). Node 22.15 and later run them on the process's own thread
// (`module.registerHooks`); Node 20 runs them on the loader thread (`module.register`).
import module from 'node:module'

if (typeof module.registerHooks === 'function') {
  const { resolve, load } = await import('./ts-hooks.mjs')
  module.registerHooks({ resolve, load })
} else {
  module.register('./ts-hooks.mjs', import.meta.url)
}
