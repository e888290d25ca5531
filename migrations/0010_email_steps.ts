import { sql, type Kysely } from '../src/db/kysely.js'

// The mail of an email step (issue 12) goes through the outbox like every other mail, linked to its
// step and process. `settle_step` marks a step's mail whose outcome the step has yet to hear of: once
// the mail is sent (or given up), the scheduler ends the step (or fails it into a manual one) and
// clears the flag in the same commit; the partial index finds those few mails. A step's mail that the
// SMTP server refuses for good is not retried: `failed_at` says when it was given up, and the retention
// removes it as it does sent mails.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table outbox_mails
    add column instance_id uuid,
    add column step_id uuid,
    add column settle_step boolean not null default false,
    add column failed_at timestamptz`.execute(db)
  await sql`create index outbox_mails_settle_idx on outbox_mails (created_at)
    where settle_step and (sent_at is not null or failed_at is not null)`.execute(db)
  await sql`create index outbox_mails_step_idx on outbox_mails (tenant_id, step_id) where step_id is not null`.execute(db)
  await sql`create index outbox_mails_failed_idx on outbox_mails (failed_at) where failed_at is not null`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index outbox_mails_failed_idx`.execute(db)
  await sql`drop index outbox_mails_step_idx`.execute(db)
  await sql`drop index outbox_mails_settle_idx`.execute(db)
  await sql`alter table outbox_mails drop column instance_id, drop column step_id, drop column settle_step, drop column failed_at`.execute(db)
}
