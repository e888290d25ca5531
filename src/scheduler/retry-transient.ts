import { isTransientDatabaseError } from '../db/errors.js'

const FIRST_WAIT_MS = 100
const LONGEST_WAIT_MS = 2000

/**
 * Runs `work`, and while it fails because the database is away (or the transaction collided), runs it
 * again with growing waits, until `until`; then, or when the signal fires, the last error is thrown.
 * Any other error is thrown at once.
 */
export async function retryTransient<T>(
  work: () => Promise<T>, options: { until: Date; now: () => Date; signal?: AbortSignal | undefined }
): Promise<T> {
  for (let waitMs = FIRST_WAIT_MS; ; waitMs = Math.min(waitMs * 2, LONGEST_WAIT_MS)) {
    try {
      return await work()
    } catch (error) {
      const left = options.until.getTime() - options.now().getTime()
      if (!isTransientDatabaseError(error) || left <= 0 || options.signal?.aborted) throw error
      await pause(waitMs, options.signal)
    }
  }
}

function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal?.addEventListener('abort', done, { once: true })
  })
}
