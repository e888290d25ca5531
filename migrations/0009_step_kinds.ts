import { sql, type Kysely } from '../src/db/kysely.js'

// Steps of more kinds than webhook and task (issue 12): email, writeValues, decision and
// followUpProcess. Each kind keeps its own settings (recipients and texts, values to write, a
// condition and its branches, the template to start) in `settings`, copied with the step when a
// process starts. An instance step the scheduler runs by itself when it falls due is `automatic`: the
// partial index finds those quickly among all due steps (most of which wait for a person).
const KINDS = `'webhook', 'task', 'email', 'writeValues', 'decision', 'followUpProcess'`
const STEP_TABLES = ['template_steps', 'instance_steps'] as const

export async function up(db: Kysely<unknown>): Promise<void> {
  for (const table of STEP_TABLES) {
    await sql`alter table ${sql.table(table)} drop constraint ${sql.ref(`${table}_kind_check`)}`.execute(db)
    await sql`alter table ${sql.table(table)} add constraint ${sql.ref(`${table}_kind_check`)} check (kind in (${sql.raw(KINDS)}))`.execute(db)
    await sql`alter table ${sql.table(table)} add column settings jsonb not null default '{}'`.execute(db)
  }
  await sql`alter table instance_steps add column automatic boolean not null default false`.execute(db)
  await sql`create index instance_steps_automatic_due_idx on instance_steps (start_at) where state = 'due' and automatic`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index instance_steps_automatic_due_idx`.execute(db)
  await sql`alter table instance_steps drop column automatic`.execute(db)
  for (const table of STEP_TABLES) {
    await sql`delete from ${sql.table(table)} where kind not in ('webhook', 'task')`.execute(db)
    await sql`alter table ${sql.table(table)} drop column settings`.execute(db)
    await sql`alter table ${sql.table(table)} drop constraint ${sql.ref(`${table}_kind_check`)}`.execute(db)
    await sql`alter table ${sql.table(table)} add constraint ${sql.ref(`${table}_kind_check`)} check (kind in ('webhook', 'task'))`.execute(db)
  }
}
