/**
 * Calls `report` at most once per `intervalMs`; the calls in between are dropped (an outage repeats itself).
 * Timed on a timer that only goes forward: on the wall clock, a step back silenced an outage's warnings as long as the step.
 */
export function throttled<T>(report: (value: T) => void, intervalMs = 5000): (value: T) => void {
  let last = -Infinity
  return (value) => {
    const now = performance.now()
    if (now - last < intervalMs) return
    last = now
    report(value)
  }
}
