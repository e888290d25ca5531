import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { makeDirectory } from '../../src/lib/make-directory.js'

const root = mkdtempSync(join(tmpdir(), 'baton-mkdir-'))
t.teardown(() => rmSync(root, { recursive: true, force: true }))

t.test('makes every missing folder of a path, with the mode given, and leaves one that is there', async (t) => {
  const deep = join(root, 'a', 'b', 'c')
  makeDirectory(deep, 0o700)
  t.ok(statSync(deep).isDirectory())
  t.equal(statSync(join(root, 'a')).mode & 0o777, 0o700 & ~process.umask())
  makeDirectory(deep)
  makeDirectory(join(root, 'a', '.', 'b', '..', 'b'))
  mkdirSync(join(root, 'made-before'))
  makeDirectory(join(root, 'made-before'))
  t.ok(statSync(join(root, 'made-before')).isDirectory())
})

t.test('a file in the way is refused with its code, not made into a folder', async (t) => {
  const file = join(root, 'a-file')
  writeFileSync(file, '')
  t.throws(() => makeDirectory(file), { code: 'EEXIST' })
  t.throws(() => makeDirectory(join(file, 'below')), { code: 'ENOTDIR' })
})

t.test('a parent that refuses children answers at once (Node\'s recursive mkdir never returned)', { skip: process.platform !== 'linux' && 'needs /proc' }, async (t) => {
  t.throws(() => makeDirectory('/proc/baton-nowhere/data'), { code: 'ENOENT' })
})
