import t from 'tap'
import { changedFields, jsonEqual, splitMergePatch } from '../../../src/modules/records/fields.js'

t.test('changedFields names added, removed and changed fields, sorted', async (t) => {
  t.same(changedFields({}, {}), [])
  t.same(changedFields({ price: 1, city: 'Berlin' }, { price: 1, city: 'Berlin' }), [])
  t.same(changedFields({ price: 1 }, { price: 2 }), ['price'])
  t.same(changedFields({ b: 1, a: 1 }, {}), ['a', 'b'], 'removed')
  t.same(changedFields({}, { z: 1, a: null }), ['a', 'z'], 'added, even as null')
  t.same(changedFields({ a: null }, {}), ['a'], 'a null field and a missing one differ')
  t.same(changedFields({ a: 1, b: 2, c: 3 }, { c: 4, a: 1, d: 5 }), ['b', 'c', 'd'])
})

t.test('changedFields compares values deeply', async (t) => {
  t.same(changedFields({ geo: { lat: 1, lon: 2 } }, { geo: { lon: 2, lat: 1 } }), [], 'key order does not matter')
  t.same(changedFields({ geo: { lat: 1, lon: 2 } }, { geo: { lat: 1, lon: 3 } }), ['geo'])
  t.same(changedFields({ tags: ['a', 'b'] }, { tags: ['a', 'b'] }), [])
  t.same(changedFields({ tags: ['a', 'b'] }, { tags: ['b', 'a'] }), ['tags'], 'array order matters')
  t.same(changedFields({ tags: ['a'] }, { tags: ['a', 'b'] }), ['tags'])
  t.same(changedFields({ n: 1 }, { n: '1' }), ['n'], 'types matter')
  t.same(changedFields({ o: {} }, { o: [] }), ['o'], 'an object is not an array')
  t.same(changedFields({ o: { a: 1 } }, { o: { b: 1 } }), ['o'], 'same size, other keys')
  t.same(changedFields({ o: null }, { o: {} }), ['o'])
})

t.test('jsonEqual', async (t) => {
  t.ok(jsonEqual({ a: [1, { b: null }] }, { a: [1, { b: null }] }))
  t.notOk(jsonEqual({ a: [1, { b: null }] }, { a: [1, {}] }))
  t.notOk(jsonEqual(1, null))
  t.ok(jsonEqual('x', 'x'))
})

t.test('splitMergePatch turns nulls into removals and keeps the rest', async (t) => {
  t.same(splitMergePatch(undefined), { remove: [], set: {} })
  t.same(splitMergePatch({ a: null, b: 1, c: { d: null } }), { remove: ['a'], set: { b: 1, c: { d: null } } })
})
