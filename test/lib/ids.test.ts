import t from 'tap'
import { newId } from '../../src/lib/ids.js'

t.test('ids are UUIDv7 and sort in the order they were made, even within one millisecond', async (t) => {
  const ids = Array.from({ length: 5000 }, () => newId(1_800_000_000_000))
  t.match(ids[0], /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
  t.same([...ids].sort(), ids)
  t.equal(new Set(ids).size, ids.length)
  const later = newId(1_800_000_100_000)
  t.ok(later > ids.at(-1)!, 'a later time sorts after')
  t.ok(newId(1_700_000_000_000) > later, 'a clock that goes back never breaks the order')
})
