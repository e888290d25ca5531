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
import { fdLimit, fdLimitMissing } from '../helpers/fd-limit.js'
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
  // No beat within the test: it would write this process's pid back.
  await lockDataDir(dir, { beatMs: 3_600_000, staleMs: 0 })
  // This process wrote the lock as a Baton does; then its pid went to another process, as after a crash.
  const other = unrelatedProcess(t)
  writeFileSync(lockFile, readFileSync(lockFile, 'utf8').replace(/^\d+/, String(other)))
  const release = await lockDataDir(dir)
  t.match(readFileSync(lockFile, 'utf8'), new RegExp(`^${process.pid}\\b`), 'the lock names this process now')
  release()
  t.notOk(existsSync(lockFile), 'and is released with it')
})

t.test('a running Baton\'s lock is never taken over; a crashed one\'s is', async (t) => {
  const dir = dataDir(t)
  const module = pathToFileURL(join(ROOT, 'src', 'db', 'data-dir-lock.ts')).href
  const holder = runCommand(process.execPath, [TS_LOADER, '--input-type=module', '-e',
    `import { lockDataDir } from ${JSON.stringify(module)}; await lockDataDir(${JSON.stringify(dir)}); console.log('locked'); setInterval(() => {}, 1000)`], {})
  t.teardown(() => { holder.child.kill('SIGKILL') })
  await holder.waitFor(/locked/)
  await t.rejects(lockDataDir(dir), { name: 'DataDirBusyError', message: new RegExp(`in use by process ${holder.child.pid}\\. It serves one process at a time`) })
  holder.child.kill('SIGKILL')
  await holder.exited
  t.ok(existsSync(join(dir, 'baton.pid')), 'a crash leaves the lock behind')
  const release = await lockDataDir(dir)
  release()
})

t.test('a lock that names only a pid (an older Baton\'s) blocks while that process lives, as before', async (t) => {
  const dir = dataDir(t)
  const other = unrelatedProcess(t)
  writeFileSync(join(dir, 'baton.pid'), String(other))
  await t.rejects(lockDataDir(dir), { name: 'DataDirBusyError', message: new RegExp(`in use by process ${other}\\.`) })
})

/** What a Baton in another container or on another machine writes: its own pid space, here holding this process's pid (both pid 1). */
function foreignLock(beat: number): string {
  return `${process.pid}\n${'0'.repeat(8)}-other-boot 12345\n${'0'.repeat(8)}-other-boot pid:[4026532999]\nother-host\nbeat ${beat}\n`
}

const quick = { beatMs: 20, staleMs: 600 }

// Two containers on one volume: the second read the first's pid in its own pid space (pid 1 is each
// one's own, or the pid is no process there) and took the live lock over; two processes wrote one cluster.
t.test('a lock from another pid space that its holder keeps rewriting is not taken over, though its pid is ours', { skip: !linux && 'needs /proc' }, async (t) => {
  const dir = dataDir(t)
  const lockFile = join(dir, 'baton.pid')
  let beat = 0
  writeFileSync(lockFile, foreignLock(beat))
  const holder = setInterval(() => writeFileSync(lockFile, foreignLock(++beat)), 20)
  t.teardown(() => clearInterval(holder))
  await t.rejects(Promise.resolve().then(() => lockDataDir(dir, quick)), { name: 'DataDirBusyError', message: new RegExp(`in use by process ${process.pid} on host other-host \\(another container or machine\\)`) })
  t.match(readFileSync(lockFile, 'utf8'), /other-host/, 'the lock is still the other one\'s')
})

t.test('a lock from another pid space that its holder keeps rewriting is not taken over when the clock is stepped forward during the watch', { skip: !linux && 'needs /proc' }, async (t) => {
  const wallNow = Date.now
  t.teardown(() => { Date.now = wallNow })
  const dir = dataDir(t)
  const lockFile = join(dir, 'baton.pid')
  let beat = 0
  writeFileSync(lockFile, foreignLock(beat))
  // Its beats come well within staleMs, but after a take-over's settling look (300 ms), as a default holder's (every 1 s) do.
  const holder = setInterval(() => writeFileSync(lockFile, foreignLock(++beat)), 500)
  t.teardown(() => clearInterval(holder))
  // The machine's clock is stepped forward a minute just after the watch began, before the holder's next beat.
  const step = setTimeout(() => { Date.now = () => wallNow() + 60_000 }, 50)
  t.teardown(() => clearTimeout(step))
  await t.rejects(Promise.resolve().then(() => lockDataDir(dir, { ...quick, staleMs: 2000 })), { name: 'DataDirBusyError', message: /in use by process \d+ on host other-host \(another container or machine\)/ })
  t.match(readFileSync(lockFile, 'utf8'), /other-host/, 'the lock is still the other one\'s')
})

t.test('a lock from another pid space left unchanged for staleMs (its holder crashed) is taken over', { skip: !linux && 'needs /proc' }, async (t) => {
  const dir = dataDir(t)
  const lockFile = join(dir, 'baton.pid')
  writeFileSync(lockFile, foreignLock(1))
  const started = Date.now()
  const release = await lockDataDir(dir, quick)
  t.ok(Date.now() - started >= quick.staleMs, 'after watching it for staleMs')
  t.notMatch(readFileSync(lockFile, 'utf8'), /other-host/, 'the lock is this process\'s now')
  release()
})

// Two processes that waited out the same left-behind lock both wrote it, each right after its last look.
t.test('of two processes taking over one left-behind lock at once, the one whose lock was overwritten stops', { skip: !linux && 'needs /proc' }, async (t) => {
  const dir = dataDir(t)
  const lockFile = join(dir, 'baton.pid')
  writeFileSync(lockFile, foreignLock(1))
  // The rival, in a third container, writes its lock right after this process wrote its own.
  const rival = setInterval(() => {
    if (!readFileSync(lockFile, 'utf8').includes('other-host')) {
      writeFileSync(lockFile, foreignLock(2).replace('other-host', 'rival-host'))
      clearInterval(rival)
    }
  }, 5)
  t.teardown(() => clearInterval(rival))
  await t.rejects(lockDataDir(dir, quick), { name: 'DataDirBusyError', message: /taken over at the same time by process \d+ on host rival-host/ })
  t.match(readFileSync(lockFile, 'utf8'), /rival-host/, 'the rival\'s lock is left in place')
})

// Two processes starting at once after a crash on this machine both found its lock left behind and
// both wrote theirs: the earlier one's was overwritten, and both opened the cluster.
t.test('of two processes taking over a crashed lock of this pid space at once, the one whose lock was overwritten stops', { skip: !linux && 'needs /proc' }, async (t) => {
  const dir = dataDir(t)
  const lockFile = join(dir, 'baton.pid')
  const crashed = spawn('true', [], { stdio: 'ignore' })
  await new Promise((resolve) => crashed.on('exit', resolve))
  writeFileSync(lockFile, `${crashed.pid}\n`)
  const rival = unrelatedProcess(t)
  const rivalLock = `${rival}\n${'0'.repeat(8)} 1\n`
  const watch = setInterval(() => {
    if (!readFileSync(lockFile, 'utf8').startsWith(`${crashed.pid}\n`)) {
      writeFileSync(lockFile, rivalLock)
      clearInterval(watch)
    }
  }, 5)
  t.teardown(() => clearInterval(watch))
  await t.rejects(lockDataDir(dir, quick), { name: 'DataDirBusyError', message: new RegExp(`taken over at the same time by process ${rival}`) })
  t.equal(readFileSync(lockFile, 'utf8'), rivalLock, 'the rival\'s lock is left in place')
})

// Two processes starting at once on a free folder both found no lock and both wrote one.
t.test('of two processes starting at once on a free folder, the one that finds the other\'s lock made meanwhile stops', async (t) => {
  const dir = dataDir(t)
  const lockFile = join(dir, 'baton.pid')
  const rival = unrelatedProcess(t)
  await t.rejects(lockDataDir(dir, { ...quick, afterLook: () => writeFileSync(lockFile, `${rival}\n`) }),
    { name: 'DataDirBusyError', message: new RegExp(`in use by process ${rival}, which started at the same time`) })
  t.equal(readFileSync(lockFile, 'utf8'), `${rival}\n`, 'the other\'s lock is left in place')
  const release = await lockDataDir(dir, quick).catch((error: Error) => error)
  t.match(release, { name: 'DataDirBusyError' }, 'and it holds the folder')
})

t.test('a lock removed while held is made again by the next beat; one another process made in its place is left to it', { skip: !linux && 'needs /proc' }, async (t) => {
  const dir = dataDir(t)
  const lockFile = join(dir, 'baton.pid')
  const lost: Error[] = []
  const release = await lockDataDir(dir, { ...quick, onLost: (error) => lost.push(error) })
  t.teardown(release)
  rmSync(lockFile)
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.match(readFileSync(lockFile, 'utf8'), new RegExp(`^${process.pid}\\n`), 'made again')
  const rival = unrelatedProcess(t)
  rmSync(lockFile)
  writeFileSync(lockFile, `${rival}\n`)
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(readFileSync(lockFile, 'utf8'), `${rival}\n`, 'the other process\'s lock stays')
  t.match(lost, [{ name: 'DataDirBusyError' }], 'and this one is told')
})

t.test('the holder rewrites its lock while it holds it, and stops once released', { skip: !linux && 'needs /proc' }, async (t) => {
  const dir = dataDir(t)
  const lockFile = join(dir, 'baton.pid')
  const release = await lockDataDir(dir, quick)
  const first = readFileSync(lockFile, 'utf8')
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.not(readFileSync(lockFile, 'utf8'), first, 'a later beat')
  release()
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.notOk(existsSync(lockFile), 'no beat writes it again')
})

// A holder whose event loop stood still past staleMs (a statement of the embedded database, a paused
// container) has had its lock taken over by a process in another container: its beat wrote the lock back
// as its own, and its release removed the other's, so two processes wrote one cluster, and a third could start.
t.test('a holder whose lock was taken over neither writes it back nor removes it, and is told', { skip: !linux && 'needs /proc' }, async (t) => {
  const dir = dataDir(t)
  const lockFile = join(dir, 'baton.pid')
  const lost: Error[] = []
  const release = await lockDataDir(dir, { ...quick, onLost: (error) => lost.push(error) })
  writeFileSync(lockFile, foreignLock(1))
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.match(readFileSync(lockFile, 'utf8'), /other-host/, 'the other process\'s lock is left as it is')
  t.equal(lost.length, 1, 'the holder is told once')
  t.match(lost[0]?.message, /taken over by process \d+ on host other-host/)
  release()
  t.ok(existsSync(lockFile), 'the release leaves the other\'s lock in place')
})

// Past the open-files limit the lock cannot be read: that says nothing of who holds it. Read as empty, it
// was taken for another process's lock, and the process ended, where everything else waits the shortage out.
t.test('a lock its holder cannot read for a moment (no file descriptor to spare) is still its own', { skip: (!linux && 'needs /proc') || fdLimitMissing() }, async (t) => {
  const dir = dataDir(t)
  const lockFile = join(dir, 'baton.pid')
  const lost: Error[] = []
  const release = await lockDataDir(dir, { ...quick, onLost: (error) => lost.push(error) })
  t.teardown(release)
  const limit = fdLimit()
  t.teardown(() => limit.close())
  await limit.exhaust()
  try {
    // Several beats of 20 ms with no descriptor for the lock file.
    await new Promise((resolve) => setTimeout(resolve, 150))
  } finally {
    await limit.restore()
  }
  const before = readFileSync(lockFile, 'utf8')
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.same(lost, [], 'not taken for another\'s')
  t.not(readFileSync(lockFile, 'utf8'), before, 'and rewritten by the beats after')
})
