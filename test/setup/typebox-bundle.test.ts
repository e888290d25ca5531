// The bundled typebox the test processes load (typebox-bundle.ts) is typebox itself, in one module.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import t from 'tap'
import { ROOT } from '../helpers/process.js'
import { bundleTypebox, TYPEBOX_BUNDLE } from './typebox-bundle.js'

t.test('test processes load typebox from the bundle, which exports what the package does', async (t) => {
  t.equal(import.meta.resolve('typebox'), pathToFileURL(TYPEBOX_BUNDLE).href, 'the tests\' loader sends typebox to the bundle')
  const bundled = await import('typebox')
  const original = await import(pathToFileURL(join(ROOT, 'node_modules/typebox/build/index.mjs')).href) as typeof bundled
  t.same(Object.keys(bundled).sort(), Object.keys(original).sort())
  const schema = (T: typeof bundled.Type) => T.Object({ id: T.String({ format: 'uuid' }), n: T.Optional(T.Integer({ minimum: 1 })), tags: T.Array(T.Union([T.Literal('a'), T.Literal('b')])) })
  t.same(schema(bundled.Type), schema(original.Type), 'the same schemas')
})

t.test('the bundle is written once for each typebox version', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'baton-typebox-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'typebox.mjs')
  t.equal(await bundleTypebox(file), true, 'written when missing')
  t.equal(await bundleTypebox(file), false, 'kept when it is the installed version')
  const text = await readFile(file, 'utf8')
  await writeFile(file, text.replace(/^\/\/ typebox \S+/, '// typebox 0.0.1'))
  t.equal(await bundleTypebox(file), true, 'written again for another version')
  t.equal(await readFile(file, 'utf8'), text)
})
