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
