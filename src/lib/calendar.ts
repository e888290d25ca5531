/**
 * Calendar arithmetic in a tenant's time zone: N days later at the same wall-clock time, so a DST
 * change does not shift the hour. A wall-clock time that does not exist (a spring-forward gap)
 * lands just after the gap.
 */
export function addCalendarDays(instant: Date, days: number, timeZone: string): Date {
  const wall = wallClock(instant, timeZone)
  const target = Date.UTC(wall.year, wall.month - 1, wall.day + days, wall.hour, wall.minute, wall.second, instant.getUTCMilliseconds())
  return fromWallClock(target, timeZone)
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

// The instant whose wall clock reads `wallMs` (a wall-clock time written as if it were UTC).
function fromWallClock(wallMs: number, timeZone: string): Date {
  const first = wallMs - offsetAt(wallMs, timeZone)
  const second = wallMs - offsetAt(first, timeZone)
  return new Date(offsetAt(second, timeZone) === offsetAt(first, timeZone) ? second : Math.max(first, second))
}
