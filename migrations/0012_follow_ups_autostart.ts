import { sql, type Kysely } from '../src/db/kysely.js'

// Processes that start processes (issue 12). A follow-up step starts an instance of another template:
// the child names its parent process and the step that started it, and the unique index on that step
// lets a step start at most one child however many workers run it. A template may start itself
// (`autostart`, its settings as JSON: when, on which records, who is responsible) when a record is
// created, a watched field changes, or a date of a record comes near; every such occasion is one row
// of `autostart_runs`, unique per (template, record, occurrence), whether it started a process or was
// skipped (and why): a retried write, a second worker or a restart finds the row and starts nothing.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table process_instances add column parent_instance_id uuid, add column parent_step_id uuid`.execute(db)
  await sql`create unique index process_instances_parent_step_idx on process_instances (tenant_id, parent_step_id)
    where parent_step_id is not null`.execute(db)
  // The chore that ends waiting follow-up steps reads only those.
  await sql`create index instance_steps_follow_up_running_idx on instance_steps (tenant_id, id)
    where kind = 'followUpProcess' and state = 'running'`.execute(db)
  await sql`alter table process_templates add column autostart jsonb`.execute(db)
  await sql`create index process_templates_autostart_idx on process_templates (tenant_id)
    where active and autostart is not null`.execute(db)
  await sql`create table autostart_runs (
    tenant_id uuid not null references tenants (id) on delete cascade,
    id uuid not null,
    template_id uuid not null,
    record_kind text not null check (record_kind in ('property', 'address')),
    record_id uuid not null,
    occurrence text not null,
    outcome text not null check (outcome in ('started', 'skipped')),
    reason text,
    instance_id uuid,
    created_at timestamptz not null default now(),
    primary key (tenant_id, id),
    foreign key (tenant_id, template_id) references process_templates (tenant_id, id) on delete cascade,
    unique (tenant_id, template_id, record_kind, record_id, occurrence)
  )`.execute(db)
  await sql`create index autostart_runs_template_idx on autostart_runs (tenant_id, template_id, id)`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table autostart_runs`.execute(db)
  await sql`drop index process_templates_autostart_idx`.execute(db)
  await sql`alter table process_templates drop column autostart`.execute(db)
  await sql`drop index instance_steps_follow_up_running_idx`.execute(db)
  await sql`drop index process_instances_parent_step_idx`.execute(db)
  await sql`alter table process_instances drop column parent_instance_id, drop column parent_step_id`.execute(db)
}
