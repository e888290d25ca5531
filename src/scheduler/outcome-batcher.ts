import type { Clock } from '../adapters/clock.js'
import type { DB } from '../db/connect.js'
import { isLockNotAvailable, isTransientDatabaseError } from '../db/errors.js'
import { backoffMs, DATABASE_BACKOFF } from '../lib/backoff.js'
import { recordOutcomes, type AttemptRecord, type Recorded } from './record-outcome.js'

interface Pending {
  record: AttemptRecord
  /** Past this time the claim's lease may be taken over: the outcome is no longer worth recording. */
  until: Date
  signal: AbortSignal | undefined
  resolve(result: Recorded): void
  reject(error: unknown): void
  /** Written again without its response body and error text, which Postgres refused. */
  plain?: boolean
  /** How often a row it needs was found held elsewhere (lockNotAvailable): its next try waits the backoff of that many. */
  heldOff?: number
}

/**
 * Group commit of call outcomes: outcomes that arrive while a batch is being written wait and go
 * together in the next one (up to `maxBatch`), so under load one transaction records many calls
 * and at rest a lone outcome is written at once. While the database is away a batch is tried again
 * with growing waits; an outcome is given up when its lease runs out (the reaper then logs the
 * attempt as aborted). A batch that fails otherwise is written one outcome at a time, so one bad
 * outcome does not sink the others; an outcome whose text Postgres refuses as data (SQLSTATE class
 * 22) is written once more without its response body and error text. A batch that meets a row held
 * elsewhere past OUTCOME_LOCK_WAIT_MS is written one outcome at a time too, and an outcome that meets
 * it alone is tried again alone after a backoff, beside the batches, so the others are not held behind
 * it. An outcome that is not written leaves its call to be made again once the lease runs out: a success is recorded whatever
 * the provider answered with it.
 */
export class OutcomeBatcher {
  private readonly pending: Pending[] = []
  private writing: Promise<void> | undefined

  constructor(private readonly db: DB, private readonly clock: Clock, private readonly maxBatch = 100) {}

  record(record: AttemptRecord, until: Date, signal?: AbortSignal): Promise<Recorded> {
    return new Promise((resolve, reject) => {
      this.pending.push({ record, until, signal, resolve, reject })
      this.writing ??= this.drain()
    })
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending.length > 0) await this.write(this.pending.splice(0, this.maxBatch))
    } finally {
      // In the same turn as the last look at `pending`: an outcome recorded a turn later (a `.finally` here)
      // found the drain still set and started none, and waited for the next outcome to be written.
      this.writing = undefined
    }
  }

  private async write(batch: Pending[]): Promise<void> {
    let live = batch
    for (let retry = 1; live.length > 0; retry++) {
      try {
        const results = await recordOutcomes(this.db, live.map((p) => p.record), this.clock.now())
        live.forEach((p, i) => p.resolve(results[i]!))
        return
      } catch (error) {
        if (!isTransientDatabaseError(error)) return this.isolate(live, error)
        const now = this.clock.now().getTime()
        for (const p of live.filter((p) => p.until.getTime() <= now || p.signal?.aborted)) p.reject(error)
        live = live.filter((p) => p.until.getTime() > now && !p.signal?.aborted)
        // A row one of them needs is held elsewhere (OUTCOME_LOCK_WAIT_MS): the others are written one by one,
        // and one that meets it is tried again alone after its backoff, so that no other waits for it.
        if (isLockNotAvailable(error) && live.length > 1) return this.isolate(live, error)
        if (isLockNotAvailable(error) && live.length === 1) return this.later(live[0]!)
        if (live.length > 0) await new Promise((resolve) => setTimeout(resolve, backoffMs(DATABASE_BACKOFF, retry)))
      }
    }
  }

  /**
   * Tried again alone after the backoff, beside the batches: back in line, it joined the next batch of up to
   * `maxBatch`, which then waited for its row and was written one by one, each held outcome in it another
   * wait (a review: 20 processes held, every other outcome 10 s late, on each round for as long as the rows
   * stayed held). The timer keeps no process alive; the outcome's lease bounds the tries.
   */
  private later(one: Pending): void {
    one.heldOff = (one.heldOff ?? 0) + 1
    setTimeout(() => { this.write([one]).catch((error: unknown) => one.reject(error)) }, backoffMs(DATABASE_BACKOFF, one.heldOff)).unref()
  }

  private async isolate(batch: Pending[], error: unknown): Promise<void> {
    if (batch.length === 1) {
      const one = batch[0]!
      if (one.plain || !isDataException(error)) return one.reject(error)
      const code = (error as { code: string }).code
      const errorText = one.record.error === null ? null : `the error text could not be stored (SQLSTATE ${code})`
      const responseBody = one.record.responseBody === null ? null : `(the response body could not be stored: SQLSTATE ${code})`
      return this.write([{ ...one, record: { ...one.record, error: errorText, responseBody }, plain: true }])
    }
    for (const one of batch) await this.write([one])
  }
}

/** An error of the values a statement was given (SQLSTATE class 22: a NUL in text, a number out of range). */
function isDataException(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code
  return typeof code === 'string' && code.startsWith('22')
}
