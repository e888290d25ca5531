import { sql, type Kysely } from '../src/db/kysely.js'

// The branch a decision step took (issue 12): yes or no, set when the step ends done; the instance
// view shows it beside the decision's settings.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table instance_steps add column decision text check (decision in ('yes', 'no'))`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table instance_steps drop column decision`.execute(db)
}
