import { sql } from '../db/kysely.js'

/**
 * That the row's tenant (its `tenant_id` column, named as the statement knows it) is not being
 * deleted (tenants.deleting_since): the scheduler's claims and chores take no row of a tenant whose
 * deletion has begun, and leave its rows to the deletion. The tenants being deleted are read once per
 * statement (an InitPlan over tenants_deleting_idx, empty but during a deletion), and each row's
 * tenant compared with them. Written as `not exists`, the check was planned as a join that read every
 * tenant, or left the statement's partial index; as a look-up of the row's tenant by key, it ran for
 * every row the statement read, however many it then left: a burst's claims, reading all 20,000 due
 * deliveries before their top-N sort, took Postgres from 0.3 to 0.6-0.7 ms a step
 * (`npm run bench:scheduler`; test/db/foreign-key-plans.test.ts).
 */
export function tenantNotDeleting(tenantId: string) {
  return sql<boolean>`${sql.ref(tenantId)} <> all (array(select tn.id from tenants tn where tn.deleting_since is not null))`
}
