// The embedded database's lock (baton.pid in BATON_DATA_DIR) keeps a second process out. After a crash
// the pid it names may be given to an unrelated process, which blocked every start until a person
// removed the file.
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import t, { type Test } from 'tap'
import { lockDataDir } from '../../src/db/data-dir-lock.js'
import { ROOT, runCommand, TS_LOADER } from '../helpers/process.js'

const linux = existsSync('/proc/self/stat')

function dataDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'baton-lock-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A live process that is no Baton, as one that was given a crashed Baton's pid. */
function unrelatedProcess(t: Test): number {
  const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' })
  t.teardown(() => { sleeper.kill('SIGKILL') })
  return sleeper.pid!
}

t.test('a lock whose pid now belongs to an unrelated process is taken over', { skip: !linux && 'needs /proc' }, async (t) => {
  const dir = dataDir(t)
  const lockFile = join(dir, 'baton.pid')
  lockDataDir(dir)
  // This process wrote the lock as a Baton does; then its pid went to another process, as after a crash.
  const other = unrelatedProcess(t)
  writeFileSync(lockFile, readFileSync(lockFile, 'utf8').replace(/^\d+/, String(other)))
  const release = lockDataDir(dir)
  t.match(readFileSync(lockFile, 'utf8'), new RegExp(`^${process.pid}\\b`), 'the lock names this process now')
  release()
  t.notOk(existsSync(lockFile), 'and is released with it')
})

t.test('a running Baton\'s lock is never taken over; a crashed one\'s is', async (t) => {
  const dir = dataDir(t)
  const module = pathToFileURL(join(ROOT, 'src', 'db', 'data-dir-lock.ts')).href
  const holder = runCommand(process.execPath, [TS_LOADER, '--input-type=module', '-e',
    `import { lockDataDir } from ${JSON.stringify(module)}; lockDataDir(${JSON.stringify(dir)}); console.log('locked'); setInterval(() => {}, 1000)`], {})
  t.teardown(() => { holder.child.kill('SIGKILL') })
  await holder.waitFor(/locked/)
  t.throws(() => lockDataDir(dir), { name: 'DataDirBusyError', message: new RegExp(`in use by process ${holder.child.pid}\\. It serves one process at a time`) })
  holder.child.kill('SIGKILL')
  await holder.exited
  t.ok(existsSync(join(dir, 'baton.pid')), 'a crash leaves the lock behind')
  lockDataDir(dir)()
})

t.test('a lock that names only a pid (an older Baton\'s) blocks while that process lives, as before', async (t) => {
  const dir = dataDir(t)
  const other = unrelatedProcess(t)
  writeFileSync(join(dir, 'baton.pid'), String(other))
  t.throws(() => lockDataDir(dir), { name: 'DataDirBusyError', message: new RegExp(`in use by process ${other}\\.`) })
})
