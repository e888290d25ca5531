import t from 'tap'
import { RecentlyShort } from '../../src/scheduler/recently-short.js'

t.test('a host found short rests for the rest, then is claimed apart again; one found full does not rest', async (t) => {
  let now = 1000
  const short = new RecentlyShort(200, () => now)
  t.notOk(short.resting('a.example:443'), 'never found short')
  short.claimed('a.example:443', true)
  now += 199
  t.ok(short.resting('a.example:443'), 'rests 200 ms')
  now += 1
  t.notOk(short.resting('a.example:443'), 'rested')
  short.claimed('a.example:443', true)
  short.claimed('a.example:443', false)
  t.notOk(short.resting('a.example:443'), 'a full claim may have left more due')
})

t.test('hosts found short once and never claimed again are forgotten: they do not pile up over weeks', async (t) => {
  let now = 1000
  const short = new RecentlyShort(200, () => now)
  for (let i = 0; i < 10_000; i++) {
    short.claimed(`free-${i}.example:443`, true)
    now += 50
  }
  t.ok(short.size <= 4, `only those found short within the rest are kept (${short.size})`)
  t.ok(short.resting('free-9999.example:443'), 'the last still rests')
  t.notOk(short.resting('free-0.example:443'), 'the first rested long ago')
})

t.test('a host found short again rests from then, behind the hosts found short after its first time', async (t) => {
  let now = 1000
  const short = new RecentlyShort(200, () => now)
  short.claimed('a.example:443', true)
  now += 50
  short.claimed('b.example:443', true)
  now += 100
  short.claimed('a.example:443', true)
  now += 110
  short.claimed('c.example:443', true)
  t.notOk(short.resting('b.example:443'), 'found short 210 ms ago')
  t.ok(short.resting('a.example:443'), 'found short again 110 ms ago')
  t.equal(short.size, 2, 'b is forgotten, a and c kept')
})
