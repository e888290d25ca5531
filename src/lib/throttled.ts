/**
 * Calls `report` at most once per `intervalMs`; the calls in between are dropped (an outage repeats itself).
 * Timed on a timer that only goes forward by default: on the wall clock, a step back silenced an outage's
 * warnings as long as the step. A clock of the caller's (`now`, one a test moves) that steps back lets the
 * next call through.
 */
export function throttled<T>(report: (value: T) => void, intervalMs = 5000, now: () => number = () => performance.now()): (value: T) => void {
  let last = -Infinity
  return (value) => {
    const at = now()
    if (at - last < intervalMs && at >= last) return
    last = at
    report(value)
  }
}
