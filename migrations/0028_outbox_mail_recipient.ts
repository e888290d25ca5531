import { sql, type Kysely } from '../src/db/kysely.js'

// A controller's mail names the user it is for, and a claim reads that user's address as it is then:
// a mail queued for an address the server refuses (the controller's mail is never given up) reaches
// the address the tenant corrected it to, and a mail queued before a change goes to the new one.
// Mails queued before this migration keep the address they were queued with.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table outbox_mails add column to_user_id uuid`.execute(db)
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table outbox_mails drop column to_user_id`.execute(db)
}
