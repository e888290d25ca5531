import { sql, type Kysely } from '../src/db/kysely.js'

// A lookup of a tenant's row by its key (`where tenant_id = $1 and id = $2`), planned without
// statistics, took any index that began with tenant_id as dear as the primary key, and the newer one
// won: on outbox_mails the mails' dedupe key (a sent mail is marked by its key, every mail), on
// template_steps the positions' key. Each then walked the tenant's rows. As in migrations 0014 and
// 0016, these indexes now lead with another column; an insert's `on conflict (tenant_id, dedupe_key)`
// names the same columns in any order (test/db/foreign-key-plans.test.ts checks every table).
export async function up(db: Kysely<unknown>): Promise<void> {
  for (const statement of [
    `alter table outbox_mails drop constraint outbox_mails_tenant_id_dedupe_key_key,
      add constraint outbox_mails_dedupe_key_key unique (dedupe_key, tenant_id)`,
    `alter table template_steps drop constraint template_steps_tenant_id_template_id_position_key,
      add constraint template_steps_template_position_key unique (template_id, tenant_id, position) deferrable initially immediate`
  ]) await sql.raw(statement).execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const statement of [
    `alter table outbox_mails drop constraint outbox_mails_dedupe_key_key,
      add constraint outbox_mails_tenant_id_dedupe_key_key unique (tenant_id, dedupe_key)`,
    `alter table template_steps drop constraint template_steps_template_position_key,
      add constraint template_steps_tenant_id_template_id_position_key unique (tenant_id, template_id, position) deferrable initially immediate`
  ]) await sql.raw(statement).execute(db)
}
