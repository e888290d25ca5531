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
