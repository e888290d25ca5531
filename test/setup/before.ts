// tap's `before`: runs prepare.ts, which readies what the test files need, in a child process without
// coverage. tap measures this process even under --disable-coverage (it turns coverage off only for the
// test files), and a run of a few files would then be judged against the thresholds by the modules
// prepare.ts loads. This process loads only the tests' loader. A signal that ends the run (tap's
// timeout, Ctrl-C) is passed on to the child, which may be waiting for another run's template.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'

const loader = `--import=${new URL('./ts-loader.mjs', import.meta.url).href}`
const child = spawn(process.execPath, [loader, fileURLToPath(new URL('./prepare.ts', import.meta.url))], {
  stdio: 'inherit',
  env: { ...process.env, _TAPJS_PROCESSINFO_COVERAGE_: '0' }
})
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => child.kill(signal))
const [status, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null]
if (status !== 0) throw new Error(`test/setup/prepare.ts ended with ${signal ?? `exit ${status}`}`)
