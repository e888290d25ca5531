import { isTransientDatabaseError } from '../db/errors.js'
import { backoffMs, DATABASE_BACKOFF } from '../lib/backoff.js'

/**
 * Runs `work`, and while it fails because the database is away (or the transaction collided), runs it
 * again with growing waits, until `until`; then, or when the signal fires, the last error is thrown.
 * Any other error is thrown at once.
 */
export async function retryTransient<T>(
  work: () => Promise<T>, options: { until: Date; now: () => Date; signal?: AbortSignal | undefined }
): Promise<T> {
  for (let retry = 1; ; retry++) {
    try {
      return await work()
    } catch (error) {
      const left = options.until.getTime() - options.now().getTime()
      if (!isTransientDatabaseError(error) || left <= 0 || options.signal?.aborted) throw error
      await pause(backoffMs(DATABASE_BACKOFF, retry), options.signal)
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
