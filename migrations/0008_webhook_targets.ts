import { sql, type Kysely } from '../src/db/kysely.js'

// A webhook step calls either a marketplace service or a free target of the tenant's own: its URL,
// delivery mode and signing secret (sealed like service secrets) live on the step, and the instance
// step holds its own copy, so a later edit of the template does not change running processes. A
// delivery of such a step has no service; the claim reads the target from the instance step.
const STEP_TABLES = ['template_steps', 'instance_steps'] as const

export async function up(db: Kysely<unknown>): Promise<void> {
  for (const table of STEP_TABLES) {
    await sql`alter table ${sql.table(table)}
      add column target_url text,
      add column target_delivery text check (target_delivery in ('query', 'json')),
      add column target_secret text`.execute(db)
    await sql`alter table ${sql.table(table)} add constraint ${sql.ref(`${table}_target_complete_check`)}
      check (num_nulls(target_url, target_delivery, target_secret) in (0, 3))`.execute(db)
    await sql`alter table ${sql.table(table)} add constraint ${sql.ref(`${table}_target_check`)}
      check (num_nonnulls(service_id, target_url) = case when kind = 'webhook' then 1 else 0 end)`.execute(db)
  }
  await sql`alter table template_steps drop constraint template_steps_check`.execute(db)
  await sql`alter table deliveries alter column service_id drop not null`.execute(db)
  await sql`alter table deliveries add constraint deliveries_service_or_step_check
    check (service_id is not null or step_id is not null)`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`delete from deliveries where service_id is null`.execute(db)
  await sql`alter table deliveries drop constraint deliveries_service_or_step_check`.execute(db)
  await sql`alter table deliveries alter column service_id set not null`.execute(db)
  for (const table of STEP_TABLES) {
    await sql`delete from ${sql.table(table)} where target_url is not null`.execute(db)
    await sql`alter table ${sql.table(table)} drop constraint ${sql.ref(`${table}_target_check`)}`.execute(db)
    await sql`alter table ${sql.table(table)} drop constraint ${sql.ref(`${table}_target_complete_check`)}`.execute(db)
    await sql`alter table ${sql.table(table)} drop column target_url, drop column target_delivery, drop column target_secret`.execute(db)
  }
  await sql`alter table template_steps add constraint template_steps_check check ((kind = 'webhook') = (service_id is not null))`.execute(db)
}
