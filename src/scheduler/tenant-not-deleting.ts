import { sql } from '../db/kysely.js'

/**
 * That the row's tenant (its `tenant_id` column, named as the statement knows it) is not being
 * deleted (tenants.deleting_since): the scheduler's claims and chores take no row of a tenant whose
 * deletion has begun, and leave its rows to the deletion. A subquery of one value, which Postgres
 * runs for each row read, one look-up by the tenants' key each: written as `not exists`, it was
 * planned as a join that, without statistics of the tenants, took nearly every tenant for one being
 * deleted and left the statement's partial index (the email steps' mails read and sorted all of them),
 * and with statistics read every tenant on each pass (test/db/foreign-key-plans.test.ts).
 */
export function tenantNotDeleting(tenantId: string) {
  return sql<boolean>`(select tn.deleting_since from tenants tn where tn.id = ${sql.ref(tenantId)}) is null`
}
