import { sql, type Kysely } from '../src/db/kysely.js'

// A foreign key's check is a query Postgres writes itself, `where tenant_id = $1 and id = $2` on the
// referenced table, planned once per connection and kept. Planned while the table is empty or has no
// statistics (a new installation, autovacuum off), every index on that table that begins with
// tenant_id costs the same as the primary key, and the newest index wins the tie: the check then
// walks all of the tenant's rows (0.15 ms per inserted step with 3,000 processes in a tenant, growing
// with every one). Here no index but the primary key begins with tenant_id alone on the three tables
// that foreign keys of the hot path point at; the queries that use them name both columns anyway.
// test/db/foreign-key-plans.test.ts checks every foreign key of the schema on an empty database.
export async function up(db: Kysely<unknown>): Promise<void> {
  for (const statement of [
    `create index process_instances_template_idx_new on process_instances (template_id, tenant_id)`,
    `drop index process_instances_template_idx`,
    `alter index process_instances_template_idx_new rename to process_instances_template_idx`,
    `alter table process_instances drop constraint process_instances_tenant_id_idempotency_key_key,
      add constraint process_instances_idempotency_key_key unique (idempotency_key, tenant_id)`,
    `alter table instance_steps drop constraint instance_steps_tenant_id_instance_id_position_key,
      add constraint instance_steps_instance_position_key unique (instance_id, tenant_id, position)`,
    `create index deliveries_service_idx_new on deliveries (service_id, tenant_id, id)`,
    `drop index deliveries_service_idx`,
    `alter index deliveries_service_idx_new rename to deliveries_service_idx`
  ]) await sql.raw(statement).execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const statement of [
    `create index process_instances_template_idx_old on process_instances (tenant_id, template_id)`,
    `drop index process_instances_template_idx`,
    `alter index process_instances_template_idx_old rename to process_instances_template_idx`,
    `alter table process_instances drop constraint process_instances_idempotency_key_key,
      add constraint process_instances_tenant_id_idempotency_key_key unique (tenant_id, idempotency_key)`,
    `alter table instance_steps drop constraint instance_steps_instance_position_key,
      add constraint instance_steps_tenant_id_instance_id_position_key unique (tenant_id, instance_id, position)`,
    `create index deliveries_service_idx_old on deliveries (tenant_id, service_id, id)`,
    `drop index deliveries_service_idx`,
    `alter index deliveries_service_idx_old rename to deliveries_service_idx`
  ]) await sql.raw(statement).execute(db)
}
