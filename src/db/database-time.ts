import type { ClockReading } from '../adapters/database-clock.js'
import type { DB } from './connect.js'
import { sql } from './kysely.js'

/**
 * The database server's clock as it is now (clock_timestamp, not the transaction's start), read on a
 * connection already held: `sentAt` and `answeredAt` time the statement alone, not the wait for a
 * connection of the pool.
 */
export function databaseTime(db: DB, elapsed: () => number): Promise<ClockReading> {
  return db.connection().execute(async (connection) => {
    const sentAt = elapsed()
    const { rows } = await sql<{ now: Date | string }>`select clock_timestamp() as now`.execute(connection)
    return { time: new Date(rows[0]!.now), sentAt, answeredAt: elapsed() }
  })
}
