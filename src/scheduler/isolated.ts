import { isTransientDatabaseError } from '../db/errors.js'

/** Called when the work for one row fails; the caller goes on with the next row. */
export type RowErrorHandler = (error: unknown, id: string) => void

export const rethrow: RowErrorHandler = (error) => {
  throw error
}

/**
 * Runs the work for one row so that its failure (a row that cannot be processed) is reported and
 * counts as not done, instead of stopping every row behind it on each pass.
 */
export async function isolated(onError: RowErrorHandler, id: string, work: () => Promise<boolean>): Promise<boolean> {
  try {
    return await work()
  } catch (error) {
    onError(error, id)
    return false
  }
}

/**
 * A chore's batch, in one transaction; when it fails for another reason than the database, each of its
 * candidates alone, and one that fails on its own is reported and given up (a manual step, say), so a
 * single bad row neither holds back the others nor fails on every pass. Returns how many were done
 * (those given up not counted).
 */
export async function batchOrEach<K extends { id: string }>(work: {
  batch: () => Promise<number>
  candidates: () => Promise<K[]>
  one: (key: K) => Promise<number>
  giveUp: (key: K, error: unknown) => Promise<boolean>
}, onError: RowErrorHandler): Promise<number> {
  try {
    return await work.batch()
  } catch (error) {
    if (isTransientDatabaseError(error)) throw error
    let done = 0
    for (const key of await work.candidates()) {
      try {
        done += await work.one(key)
      } catch (oneError) {
        if (isTransientDatabaseError(oneError)) throw oneError
        onError(oneError, key.id)
        await isolated(onError, key.id, () => work.giveUp(key, oneError))
      }
    }
    return done
  }
}
