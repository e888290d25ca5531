import type { DB } from './connect.js'
import { sql } from './kysely.js'

/** The database server's clock as it is now (clock_timestamp, not the transaction's start). */
export async function databaseTime(db: DB): Promise<Date> {
  const { rows } = await sql<{ now: Date | string }>`select clock_timestamp() as now`.execute(db)
  return new Date(rows[0]!.now)
}
