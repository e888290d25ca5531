import t from 'tap'
import { changesNothing, sameValue } from '../../src/lib/changes.js'

t.test('values compare as jsonb does', async (t) => {
  t.ok(sameValue({ a: 1, b: { c: [1, 'x'] } }, { b: { c: [1, 'x'] }, a: 1 }), 'key order aside')
  t.ok(sameValue({ a: 1, b: undefined }, { a: 1 }), 'an undefined key is absent')
  t.notOk(sameValue({ a: 1, b: null }, { a: 1 }), 'null is a value')
  t.notOk(sameValue([1, 2], [2, 1]), 'arrays in order')
  t.notOk(sameValue({ a: 1 }, [1]))
  t.notOk(sameValue('1', 1))
  t.notOk(sameValue(null, {}))
  t.ok(sameValue(new Date(1000), new Date(1000)))
  t.notOk(sameValue(new Date(1000), 1000))
})

t.test('a change given as undefined is no change', async (t) => {
  const current = { name: 'A', controller: null as string | null, settings: { x: 1 } }
  t.ok(changesNothing(current, {}))
  t.ok(changesNothing(current, { name: 'A', controller: null, settings: { x: 1 } }))
  t.ok(changesNothing(current, { name: undefined }))
  t.notOk(changesNothing(current, { controller: 'u' }))
  t.notOk(changesNothing(current, { settings: { x: 1, y: 2 } }))
})
