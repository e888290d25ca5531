/**
 * Calendar arithmetic in a tenant's time zone: N days later (N >= 0) at the same wall-clock time, so a
 * DST change does not shift the hour. A wall-clock time that does not exist (a spring-forward gap)
 * moves on by the gap's length (02:30 on Berlin's spring-forward day is 03:30). One that occurs twice (a fall-back overlap) is its earlier instant in every
 * zone, as Temporal's 'compatible' reads it, unless that is before `instant`: then the later one. So
 * the result is never before `instant`, and 0 days later is `instant` itself.
 */
export function addCalendarDays(instant: Date, days: number, timeZone: string): Date {
  const wall = wallClock(instant, timeZone)
  const target = Date.UTC(wall.year, wall.month - 1, wall.day + days, wall.hour, wall.minute, wall.second, instant.getUTCMilliseconds())
  const from = instant.getTime()
  const candidates = instantsAt(target, timeZone)
  return new Date(Math.max(candidates.find((ms) => ms >= from) ?? candidates.at(-1)!, from))
}

interface WallClock {
  year: number
  month: number
  day: number
  hour: number
  minute: number
  second: number
}

const formatters = new Map<string, Intl.DateTimeFormat>()

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone)
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric'
    })
    formatters.set(timeZone, f)
  }
  return f
}

function wallClock(instant: Date, timeZone: string): WallClock {
  const parts = Object.fromEntries(formatter(timeZone).formatToParts(instant).map((p) => [p.type, Number(p.value)]))
  return { year: parts.year!, month: parts.month!, day: parts.day!, hour: parts.hour!, minute: parts.minute!, second: parts.second! }
}

/** The zone's offset from UTC at an instant, in ms. */
function offsetAt(ms: number, timeZone: string): number {
  const w = wallClock(new Date(ms), timeZone)
  return Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second) - (ms - (((ms % 1000) + 1000) % 1000))
}

const DAY_MS = 86_400_000

/**
 * The instants whose wall clock reads `wallMs` (a wall-clock time written as if it were UTC), earliest
 * first: two in a fall-back overlap, one otherwise; for a time in a spring-forward gap, the time read
 * with the offset before it, which lies as far past the gap's end as the time lay past its start. A change of offset is looked for
 * between a day before and a day after, assuming at most one change in that span.
 */
function instantsAt(wallMs: number, timeZone: string): number[] {
  const offsets = [offsetAt(wallMs - DAY_MS, timeZone), offsetAt(wallMs + DAY_MS, timeZone)]
  const readings = [...new Set(offsets.map((offset) => wallMs - offset))].sort((a, b) => a - b)
  const exact = readings.filter((ms) => ms + offsetAt(ms, timeZone) === wallMs)
  return exact.length > 0 ? exact : [readings.at(-1)!]
}

/** The calendar date `days` after a YYYY-MM-DD date. */
export function addDays(date: string, days: number): string {
  const at = new Date(`${date}T00:00:00Z`)
  at.setUTCDate(at.getUTCDate() + days)
  return at.toISOString().slice(0, 10)
}
