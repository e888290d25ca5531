import { sql } from '../db/kysely.js'
import type { DB } from '../db/connect.js'

export interface ClaimedMail {
  tenant_id: string
  id: string
  to_address: string
  subject: string
  body: string
  attempt_count: number
  /** The email step whose mail it is (migration 0010); null for the controller's mails. */
  step_id: string | null
}

/** Leases up to `limit` due mails, oldest first, counting an attempt; mails another worker holds are skipped. */
export async function claimMails(db: DB, options: { now: Date; leaseUntil: Date; limit: number }): Promise<ClaimedMail[]> {
  const { now } = options
  const { rows } = await sql<ClaimedMail>`
    update outbox_mails m
    set lease_expires_at = ${options.leaseUntil}, attempt_count = m.attempt_count + 1
    from (
      select tenant_id, id from outbox_mails
      where sent_at is null and failed_at is null and next_attempt_at <= ${now} and (lease_expires_at is null or lease_expires_at < ${now})
      order by next_attempt_at
      limit ${options.limit}
      for update skip locked
    ) picked
    where m.tenant_id = picked.tenant_id and m.id = picked.id
    returning m.tenant_id, m.id, m.to_address, m.subject, m.body, m.attempt_count, m.step_id
  `.execute(db)
  return rows
}

/** Puts claimed mails back untried, in one statement: their lease ends and the claim's attempt is undone. */
export async function releaseMails(db: DB, mails: ClaimedMail[]): Promise<void> {
  if (mails.length === 0) return
  await db.updateTable('outbox_mails').set((eb) => ({ lease_expires_at: null, attempt_count: eb('attempt_count', '-', 1) }))
    .where('tenant_id', 'in', [...new Set(mails.map((mail) => mail.tenant_id))]).where('id', 'in', mails.map((mail) => mail.id))
    .execute()
}

export async function markSent(db: DB, mails: ClaimedMail[], now: Date): Promise<void> {
  if (mails.length === 0) return
  await db.updateTable('outbox_mails').set({ sent_at: now, lease_expires_at: null, last_error: null })
    .where('tenant_id', 'in', [...new Set(mails.map((mail) => mail.tenant_id))]).where('id', 'in', mails.map((mail) => mail.id))
    .execute()
}

export function markMail(db: DB, mail: ClaimedMail, changes: { sent_at?: Date; lease_expires_at: null; last_error: string | null; next_attempt_at?: Date; failed_at?: Date }) {
  return db.updateTable('outbox_mails').set(changes).where('tenant_id', '=', mail.tenant_id).where('id', '=', mail.id).execute()
}
