import fc from 'fast-check'
import t from 'tap'
import { addCalendarDays } from '../../src/lib/calendar.js'

t.test('days later at the same wall-clock time across DST changes', async (t) => {
  // Berlin springs forward on 2026-03-29 (UTC+1 → UTC+2) and falls back on 2026-10-25.
  t.equal(addCalendarDays(new Date('2026-03-28T09:00:00Z'), 2, 'Europe/Berlin').toISOString(), '2026-03-30T08:00:00.000Z', '10:00 stays 10:00 in spring')
  t.equal(addCalendarDays(new Date('2026-10-24T08:00:00Z'), 2, 'Europe/Berlin').toISOString(), '2026-10-26T09:00:00.000Z', '10:00 stays 10:00 in autumn')
  t.equal(addCalendarDays(new Date('2026-03-07T15:30:00Z'), 1, 'America/New_York').toISOString(), '2026-03-08T14:30:00.000Z')
  t.equal(addCalendarDays(new Date('2026-06-01T12:00:00.250Z'), 0, 'Europe/Berlin').toISOString(), '2026-06-01T12:00:00.250Z')
  t.equal(addCalendarDays(new Date('2026-01-31T10:00:00Z'), 30, 'UTC').toISOString(), '2026-03-02T10:00:00.000Z')
})

t.test('a time inside the spring-forward gap lands after it', async (t) => {
  // 02:30 on 2026-03-29 does not exist in Berlin.
  const result = addCalendarDays(new Date('2026-03-28T01:30:00Z'), 1, 'Europe/Berlin')
  t.equal(result.toISOString(), '2026-03-29T01:30:00.000Z', '03:30 CEST')
})

t.test('a time that occurs twice is its earlier instant in every zone, never one before the start', async (t) => {
  // New York falls back on 2026-11-01 (02:00 EDT → 01:00 EST): 01:30 is 05:30Z and again 06:30Z.
  const newYork = (from: string, days: number) => addCalendarDays(new Date(from), days, 'America/New_York').toISOString()
  t.equal(newYork('2026-11-01T06:30:00Z', 0), '2026-11-01T06:30:00.000Z', 'the second 01:30, 0 days later: itself, not the first 01:30 an hour before')
  t.equal(newYork('2026-11-01T05:30:00Z', 0), '2026-11-01T05:30:00.000Z', 'the first 01:30, 0 days later: itself, not the second')
  t.equal(newYork('2026-10-31T05:30:00Z', 1), '2026-11-01T05:30:00.000Z', 'a day before 01:30 EDT, 1 day later: the earlier 01:30')
  t.equal(newYork('2026-11-01T06:30:00Z', 1), '2026-11-02T06:30:00.000Z', 'the second 01:30, 1 day later: 01:30 EST')
  t.equal(newYork('2026-11-01T05:30:00Z', 1), '2026-11-02T06:30:00.000Z', 'the first 01:30, 1 day later: 01:30 EST, 25 hours on')

  // Berlin falls back on 2026-10-25 (03:00 CEST → 02:00 CET): 02:30 is 00:30Z and again 01:30Z.
  const berlin = (from: string, days: number) => addCalendarDays(new Date(from), days, 'Europe/Berlin').toISOString()
  t.equal(berlin('2026-10-25T01:30:00Z', 0), '2026-10-25T01:30:00.000Z', 'the second 02:30, 0 days later: itself')
  t.equal(berlin('2026-10-25T00:30:00Z', 0), '2026-10-25T00:30:00.000Z', 'the first 02:30, 0 days later: itself, not the second an hour after')
  t.equal(berlin('2026-10-24T00:30:00Z', 1), '2026-10-25T00:30:00.000Z', 'a day before 02:30 CEST, 1 day later: the earlier 02:30, as in New York')
  t.equal(berlin('2026-10-25T01:30:00Z', 1), '2026-10-26T01:30:00.000Z', 'the second 02:30, 1 day later: 02:30 CET')
  t.equal(berlin('2026-10-25T00:30:00Z', 1), '2026-10-26T01:30:00.000Z', 'the first 02:30, 1 day later: 02:30 CET, 25 hours on')
  t.equal(addCalendarDays(new Date('2026-11-01T06:30:00.250Z'), 0, 'America/New_York').toISOString(), '2026-11-01T06:30:00.250Z', 'milliseconds kept')
})

// A property-based check against a reference of its own: offsets read from Intl's `longOffset` (not
// from the wall-clock parts the code reads), and every offset change near the target found by sampling
// hours and bisecting, rather than reading the offsets a day either side. A time in a gap reads with the
// offset before it; one that occurs twice is the earliest instant not before the start, else the last;
// nothing is before the start. FUZZ_RUNS / FUZZ_SEED run more cases or replay another seed.
const RUNS = Number(process.env.FUZZ_RUNS ?? 1000)
const SEED = Number(process.env.FUZZ_SEED ?? 20_261_202)
const HOUR_MS = 3_600_000
const DAY_MS = 24 * HOUR_MS

const offsetFormats = new Map<string, Intl.DateTimeFormat>()
function offsetOf(ms: number, zone: string): number {
  let format = offsetFormats.get(zone)
  if (!format) offsetFormats.set(zone, format = new Intl.DateTimeFormat('en-US', { timeZone: zone, timeZoneName: 'longOffset' }))
  const name = format.formatToParts(ms).find((p) => p.type === 'timeZoneName')!.value
  const m = /^GMT(?:([+-])(\d\d):(\d\d)(?::(\d\d))?)?$/.exec(name)
  if (!m) throw new Error(`unexpected offset ${name}`)
  return m[1] ? (m[1] === '-' ? -1 : 1) * ((Number(m[2]) * 60 + Number(m[3])) * 60 + Number(m[4] ?? 0)) * 1000 : 0
}

/** The instant at which the offset changes between two instants with different offsets (to the ms). */
function changeBetween(lo: number, hi: number, zone: string): number {
  const before = offsetOf(lo, zone)
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2)
    if (offsetOf(mid, zone) === before) lo = mid
    else hi = mid
  }
  return hi
}

function reference(from: Date, days: number, zone: string): number {
  const start = from.getTime()
  const wall = new Date(start + offsetOf(start, zone))
  wall.setUTCDate(wall.getUTCDate() + days)
  const target = wall.getTime()
  const samples = Array.from({ length: 81 }, (_, k) => target - 40 * HOUR_MS + k * HOUR_MS)
  const offsets = [...new Set(samples.map((ms) => offsetOf(ms, zone)))]
  const exact = offsets.map((o) => target - o).filter((ms) => offsetOf(ms, zone) === target - ms).sort((a, b) => a - b)
  if (exact.length > 0) return Math.max(exact.find((ms) => ms >= start) ?? exact.at(-1)!, start)
  for (let k = 0; k + 1 < samples.length; k++) {
    const [a, b] = [offsetOf(samples[k]!, zone), offsetOf(samples[k + 1]!, zone)]
    if (a === b) continue
    const change = changeBetween(samples[k]!, samples[k + 1]!, zone)
    if (target >= change + a && target < change + b) return Math.max(target - a, start)
  }
  throw new Error(`no instant for ${new Date(target).toISOString()} in ${zone}`)
}

/** The offset changes of a zone between two instants, looked for fortnightly and bisected (enough to aim at). */
function changesOf(zone: string, fromMs: number, toMs: number): number[] {
  const found: number[] = []
  let offset = offsetOf(fromMs, zone)
  for (let at = fromMs; at < toMs; at += 14 * DAY_MS) {
    const next = offsetOf(at + 14 * DAY_MS, zone)
    if (next !== offset) found.push(changeBetween(at, at + 14 * DAY_MS, zone))
    offset = next
  }
  return found
}

// Zones with a skipped day (Apia 2011, Kiritimati 1994), a half-hour change (Lord_Howe), changes at
// midnight (Santiago, Gaza, Havana, Asuncion), negative DST (Dublin, Windhoek until 2017), a 24-hour
// fall-back (Sitka 1867), offsets with seconds (Monrovia, Kolkata), Ramadan suspensions (Casablanca),
// double summer time (London 1941–47), the southern hemisphere, and links.
const ZONES = [
  'Europe/Berlin', 'America/New_York', 'Pacific/Apia', 'Pacific/Kiritimati', 'Australia/Lord_Howe', 'America/Santiago',
  'Asia/Gaza', 'America/Havana', 'America/Asuncion', 'Europe/Dublin', 'Africa/Windhoek', 'America/Sitka', 'Africa/Monrovia',
  'Asia/Kolkata', 'Africa/Casablanca', 'Europe/London', 'Europe/Moscow', 'Australia/Sydney', 'Pacific/Auckland',
  'Pacific/Chatham', 'America/St_Johns', 'Antarctica/Troll', 'Asia/Tehran', 'America/Sao_Paulo', 'Europe/Lisbon',
  'America/Caracas', 'Asia/Pyongyang', 'Pacific/Kwajalein', 'America/Argentina/San_Luis', 'US/Eastern', 'Etc/GMT-14', 'UTC'
]
const ALL_ZONES = Intl.supportedValuesOf('timeZone')

t.test(`N days later in any zone matches a reference of its own (${RUNS} cases, seed ${SEED})`, async (t) => {
  const changes = new Map(ZONES.map((zone) => [zone, changesOf(zone, Date.UTC(1850, 0, 1), Date.UTC(2200, 0, 1))]))
  t.ok([...changes.values()].reduce((n, list) => n + list.length, 0) > 5000, 'thousands of offset changes to aim at')
  const days = fc.oneof(fc.constantFrom(0, 1, 2, 7, 365, 366, 3650), fc.integer({ min: 0, max: 3650 }))
  // The start lands, `days` calendar days on, within a day and a half of an offset change: in its gap,
  // in its overlap, or near them.
  const nearChange = fc.tuple(fc.constantFrom(...ZONES), fc.nat(), fc.integer({ min: -36 * HOUR_MS, max: 36 * HOUR_MS }), days)
    .filter(([zone]) => changes.get(zone)!.length > 0)
    .map(([zone, i, delta, n]) => {
      const list = changes.get(zone)!
      return { zone, from: new Date(list[i % list.length]! + delta - n * DAY_MS), days: n }
    })
  // Anywhere from 1850 to 2300, in every zone Intl knows, leap days and far-future years among them.
  const anywhere = fc.tuple(fc.constantFrom(...ALL_ZONES), fc.integer({ min: Date.UTC(1850, 0, 1), max: Date.UTC(2300, 0, 1) }), days)
    .map(([zone, ms, n]) => ({ zone, from: new Date(ms), days: n }))
  let cases = 0
  fc.assert(fc.property(fc.oneof({ arbitrary: nearChange, weight: 3 }, { arbitrary: anywhere, weight: 1 }), ({ zone, from, days }) => {
    cases += 1
    const got = addCalendarDays(from, days, zone).getTime()
    const want = reference(from, days, zone)
    if (got !== want) throw new Error(`${days} days after ${from.toISOString()} in ${zone}: ${new Date(got).toISOString()}, not ${new Date(want).toISOString()}`)
    if (got < from.getTime()) throw new Error('before the start')
    if (days === 0 && got !== from.getTime()) throw new Error('0 days later is not the start itself')
  }), { numRuns: RUNS, seed: SEED })
  t.equal(cases, RUNS)
})

t.test('named edges: a skipped day, a half-hour change, changes at midnight, negative DST, leap days', async (t) => {
  const at = (from: string, days: number, zone: string) => addCalendarDays(new Date(from), days, zone).toISOString()
  // Apia skipped 2011-12-30 (UTC-10 → UTC+14): 10:00 on the 29th, 1 day later, is 10:00 on the 31st.
  t.equal(at('2011-12-29T20:00:00Z', 1, 'Pacific/Apia'), '2011-12-30T20:00:00.000Z', 'the skipped day moves on by its 24 hours')
  t.equal(at('2011-12-28T20:00:00Z', 3, 'Pacific/Apia'), '2011-12-30T20:00:00.000Z', '3 days after the 28th is the 31st, as the calendar there ran')
  // Lord Howe springs forward by 30 minutes at 02:00 on 2026-10-04: 02:15 is 02:45.
  t.equal(at('2026-10-02T15:45:00Z', 1, 'Australia/Lord_Howe'), '2026-10-03T15:45:00.000Z')
  // Santiago springs forward at midnight on 2026-09-06 (00:00 → 01:00): 00:30 is 01:30.
  t.equal(at('2026-09-05T04:30:00Z', 1, 'America/Santiago'), '2026-09-06T04:30:00.000Z')
  // Dublin's winter time is the negative DST of its zone data: still 01:30 the next day, in spring and autumn.
  t.equal(at('2026-03-28T01:30:00Z', 1, 'Europe/Dublin'), '2026-03-29T01:30:00.000Z', 'spring: 01:30 falls in the gap, 02:30 IST')
  t.equal(at('2026-10-24T00:30:00Z', 1, 'Europe/Dublin'), '2026-10-25T00:30:00.000Z', 'autumn: the earlier 01:30, IST')
  // Leap days: 365 days after 29 February 2028 is 28 February 2029; the day after 28 February is 29 February or 1 March.
  t.equal(at('2028-02-29T09:00:00Z', 365, 'Europe/Berlin'), '2029-02-28T09:00:00.000Z')
  t.equal(at('2027-02-28T09:00:00Z', 1, 'Europe/Berlin'), '2027-03-01T09:00:00.000Z')
  t.equal(at('2028-02-28T09:00:00Z', 1, 'Europe/Berlin'), '2028-02-29T09:00:00.000Z')
  t.equal(at('2199-12-01T09:00:00Z', 200, 'Europe/Berlin'), '2200-06-19T08:00:00.000Z', 'far future: 10:00 CET to 10:00 CEST, the zone\'s rule still holds')
  t.equal(at('2199-07-01T08:00:00Z', 3650, 'Europe/Berlin'), '2209-06-29T08:00:00.000Z', 'ten years less two leap days')
})
