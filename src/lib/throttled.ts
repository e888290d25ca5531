/** Calls `report` at most once per `intervalMs`; the calls in between are dropped (an outage repeats itself). */
export function throttled<T>(report: (value: T) => void, intervalMs = 5000): (value: T) => void {
  let last = -Infinity
  return (value) => {
    const now = Date.now()
    if (now - last < intervalMs) return
    last = now
    report(value)
  }
}
