import { sql, type Kysely } from '../src/db/kysely.js'

// The mails still to send are those neither sent nor failed, and the claim and the first-due time read
// them in the order of their next attempt. The index of unsent mails held the failed ones too, which
// keep their last attempt's time until the retention removes them (90 days by default): a claim walked
// past every failed mail before the first to send (20,000 rows, 9 ms, on each claim). The first-due
// time took `min` over every mail to send, since one a worker holds counts from the end of its lease
// (56 ms a read behind 5,000 mails retried while the mail server was down). Now the pending mails have
// an index of their own, and the few held ones another by the end of their lease, so each read takes
// the first row of one. Both carry the same conditions: without statistics Postgres believes few rows
// have a null column and most a column set, and a held mail's index of `lease_expires_at is not null`
// alone looked larger to it than the pending one, which it walked to the end instead.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create index outbox_mails_pending_idx on outbox_mails (next_attempt_at) where sent_at is null and failed_at is null`.execute(db)
  await sql`create index outbox_mails_leased_idx on outbox_mails (lease_expires_at)
    where lease_expires_at is not null and sent_at is null and failed_at is null`.execute(db)
  await sql`drop index outbox_mails_unsent_idx`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`create index outbox_mails_unsent_idx on outbox_mails (next_attempt_at) where sent_at is null`.execute(db)
  await sql`drop index outbox_mails_leased_idx`.execute(db)
  await sql`drop index outbox_mails_pending_idx`.execute(db)
}
