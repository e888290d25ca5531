import { sql } from '../../../db/kysely.js'
import type { DB } from '../../../db/connect.js'
import type { ParameterType } from '../../../db/database.js'
import type { PageRequest } from '../../../lib/pagination.js'

export interface ParameterValues {
  name: string
  label: string
  type: ParameterType
  allowed_values: string[] | null
  required: boolean
  default_value: unknown
}

export function findParameter(db: DB, serviceId: string, id: string) {
  return db.selectFrom('service_parameters').selectAll().where('service_id', '=', serviceId).where('id', '=', id).executeTakeFirst()
}

// Lowered as JavaScript lowers the name (ASCII, by the schema), not by the database's collation: Turkish's lowers I to ı.
export function findParameterNamed(db: DB, serviceId: string, name: string) {
  return db.selectFrom('service_parameters').select(['id', 'name'])
    .where('service_id', '=', serviceId).where(sql`lower(name collate "C")`, '=', name.toLowerCase()).executeTakeFirst()
}

export async function countParameters(db: DB, serviceId: string): Promise<number> {
  const row = await db.selectFrom('service_parameters').select((eb) => eb.fn.countAll<string>().as('count')).where('service_id', '=', serviceId).executeTakeFirstOrThrow()
  return Number(row.count)
}

export function listParameters(db: DB, serviceId: string, page: PageRequest) {
  let query = db.selectFrom('service_parameters').selectAll().where('service_id', '=', serviceId).orderBy('id').limit(page.limit + 1)
  if (page.after) query = query.where('id', '>', page.after)
  return query.execute()
}

export function insertParameter(db: DB, key: { service_id: string; id: string }, values: ParameterValues, now: Date) {
  return db.insertInto('service_parameters')
    .values({ ...key, ...toColumns(values), created_at: now, updated_at: now })
    .returningAll().executeTakeFirstOrThrow()
}

export function updateParameter(db: DB, serviceId: string, id: string, values: ParameterValues, now: Date) {
  return db.updateTable('service_parameters').set({ ...toColumns(values), updated_at: now })
    .where('service_id', '=', serviceId).where('id', '=', id).returningAll().executeTakeFirst()
}

export async function deleteParameter(db: DB, serviceId: string, id: string): Promise<boolean> {
  const result = await db.deleteFrom('service_parameters').where('service_id', '=', serviceId).where('id', '=', id).executeTakeFirst()
  return result.numDeletedRows > 0n
}

// jsonb columns take JSON text: node-postgres would send a JS array as a Postgres array literal.
function toColumns(values: ParameterValues) {
  return { ...values, allowed_values: jsonText(values.allowed_values), default_value: jsonText(values.default_value) }
}

function jsonText(value: unknown): string | null {
  return value === null || value === undefined ? null : JSON.stringify(value)
}
