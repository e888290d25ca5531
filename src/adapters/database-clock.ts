import type { Clock } from './clock.js'

/** How often the database's clock is read again. */
const READ_EVERY_MS = 60_000
/**
 * A reading whose round trip took longer is half that uncertain: it replaces a better one only once
 * that is older than KEEP_BEST_MS (the database's own clock may have been stepped meanwhile).
 */
const PRECISE_MS = 250
const KEEP_BEST_MS = 600_000

/** The database server's clock, and when (on the forward-only timer) the statement that read it was sent and answered. */
export interface ClockReading {
  time: Date
  sentAt: number
  answeredAt: number
}

export interface DatabaseClockOptions {
  /**
   * Reads the database server's clock, timing only its statement (src/db/database-time.ts): a wait
   * for a pooled connection, seconds under load, would count as the reading's uncertainty and put
   * the time behind by half of it.
   */
  read: (elapsed: () => number) => Promise<ClockReading>
  /** A timer that only goes forward, in ms (performance.now): what passed since the last reading. */
  elapsed?: () => number
  /** This machine's clock, in ms: the time until the first reading. */
  wall?: () => number
}

/**
 * The time every Baton process goes by: the database server's clock, read at the start and every
 * READ_EVERY_MS, carried forward between readings on a timer that only goes forward. Leases, due
 * times, deadlines and apiClaims are written by one process and read by another (a worker takes back
 * the claim of a worker whose lease ran out): on the clocks of their own machines, a worker 30 s
 * ahead of another took back its calls while they were being made and made them again (36 of 80 in a
 * probe, two workers at -30 s and +30 s with 60 s leases). A step of this machine's clock moves
 * nothing; until a reading succeeds, the time is this machine's.
 */
export class DatabaseClock implements Clock {
  private reading: { at: number; ms: number; roundTripMs: number } | undefined
  private timer: NodeJS.Timeout | undefined
  private readonly read: (elapsed: () => number) => Promise<ClockReading>
  private readonly elapsed: () => number
  private readonly wall: () => number

  constructor(options: DatabaseClockOptions) {
    this.read = options.read
    this.elapsed = options.elapsed ?? (() => performance.now())
    this.wall = options.wall ?? Date.now
  }

  now(): Date {
    const reading = this.reading
    return new Date(reading ? reading.ms + (this.elapsed() - reading.at) : this.wall())
  }

  /** How far this machine's clock is ahead of the database's, in ms (behind when negative); undefined before a reading. */
  offsetMs(): number | undefined {
    return this.reading && this.wall() - this.now().getTime()
  }

  /** Reads the database's clock; false when the reading was too uncertain to take. Throws when the database did not answer. */
  async take(): Promise<boolean> {
    const { time, sentAt, answeredAt } = await this.read(this.elapsed)
    const roundTripMs = answeredAt - sentAt
    const kept = this.reading
    if (kept && roundTripMs > PRECISE_MS && roundTripMs > kept.roundTripMs && answeredAt - kept.at < KEEP_BEST_MS) return false
    // The server read its clock somewhere within the round trip: the middle is off by half of it at most.
    this.reading = { at: sentAt + roundTripMs / 2, ms: time.getTime(), roundTripMs }
    return true
  }

  /** As take(), and false when the reading failed: the time goes on as it was, on the timer. */
  async sync(): Promise<boolean> {
    return this.take().catch(() => false)
  }

  /** Reads the clock again every READ_EVERY_MS, until stop(); the timer keeps no process alive. */
  start(everyMs = READ_EVERY_MS): void {
    this.stop()
    this.timer = setInterval(() => void this.sync(), everyMs)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
  }
}

/** How far this machine's clock may be from the database's before the start says so. */
const OFF_NOTED_MS = 5000

/**
 * The clock of a Baton process (src/server.ts): the database's, read once before the process goes on
 * and then every minute. The first reading throws when the database does not answer: the start waits
 * for it (whenDatabaseAnswers), as a process on this machine's clock for a minute wrote leases and
 * due times on it, and then jumped by its offset. A machine whose clock is more than OFF_NOTED_MS
 * off is named in the log.
 */
export async function startDatabaseClock(
  read: (elapsed: () => number) => Promise<ClockReading>, log: { warn(context: object, message: string): void }, wall: () => number = Date.now
): Promise<DatabaseClock> {
  const clock = new DatabaseClock({ read, wall })
  await clock.take()
  const offsetMs = clock.offsetMs()
  if (offsetMs !== undefined && Math.abs(offsetMs) > OFF_NOTED_MS) {
    log.warn({ offsetMs: Math.round(offsetMs) }, `this machine's clock is ${Math.round(Math.abs(offsetMs) / 1000)} s ${offsetMs > 0 ? 'ahead of' : 'behind'} the database's; Baton goes by the database's`)
  }
  clock.start()
  return clock
}
