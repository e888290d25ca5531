import { sql } from '../db/kysely.js'
import { byKeys } from '../db/by-keys.js'
import type { DB } from '../db/connect.js'
import { tenantNotDeleting } from './tenant-not-deleting.js'

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

/**
 * The bodies one claim loads at most, in bytes, beyond its first mail: a body may be up to a
 * million characters (a rendered e-mail's cap), so a batch of a hundred could hold about 100 MB in
 * the worker. The rest stay due for the next claim.
 */
const MAIL_CLAIM_BYTES = 4 * 1024 * 1024

export interface MailClaim {
  mails: ClaimedMail[]
  /** More were due than the claim took, by its limit or its bytes: the sender goes on with another. */
  more: boolean
}

/**
 * Leases up to `limit` due mails, oldest first, counting an attempt; mails another worker holds are
 * skipped. A mail is taken while the bodies before it in the claim come to less than `maxBytes`, so
 * the first is always taken (its size is read without loading it). A mail for a user (`to_user_id`)
 * goes to that user's address as it is now, which the row then keeps. A tenant being deleted
 * (tenants.deleting_since) has none claimed: its mails stay queued until the deletion takes them.
 */
export async function claimMails(db: DB, options: { now: Date; leaseUntil: Date; limit: number; maxBytes?: number }): Promise<MailClaim> {
  const { now } = options
  const { rows } = await sql<ClaimedMail & { picked: number }>`
    with picked as (
      select tenant_id, id, next_attempt_at, octet_length(body) as size from outbox_mails
      where sent_at is null and failed_at is null and next_attempt_at <= ${now} and (lease_expires_at is null or lease_expires_at < ${now})
        and ${tenantNotDeleting('outbox_mails.tenant_id')}
      order by next_attempt_at
      limit ${options.limit}
      for update skip locked
    ), taken as (
      select tenant_id, id from (
        select tenant_id, id, size, sum(size) over (order by next_attempt_at, id rows unbounded preceding) - size as before from picked
      ) sized
      where before < ${options.maxBytes ?? MAIL_CLAIM_BYTES}
    )
    update outbox_mails m
    set lease_expires_at = ${options.leaseUntil}, attempt_count = m.attempt_count + 1,
        to_address = coalesce((select u.email from users u where u.tenant_id = m.tenant_id and u.id = m.to_user_id), m.to_address)
    from taken
    where m.tenant_id = taken.tenant_id and m.id = taken.id
    returning m.tenant_id, m.id, m.to_address, m.subject, m.body, m.attempt_count, m.step_id, (select count(*)::int from picked) as picked
  `.execute(db)
  const picked = rows[0]?.picked ?? 0
  const mails = rows.map(({ picked: _, ...mail }) => mail)
  return { mails, more: picked === options.limit || mails.length < picked }
}

/** Puts claimed mails back untried, in one statement: their lease ends and the claim's attempt is undone. */
export async function releaseMails(db: DB, mails: ClaimedMail[]): Promise<void> {
  if (mails.length === 0) return
  await db.updateTable('outbox_mails').set((eb) => ({ lease_expires_at: null, attempt_count: eb('attempt_count', '-', 1) }))
    .where(byKeys('outbox_mails', mails)).execute()
}

/**
 * Each mail by its key (byKeys), as releaseMails: `tenant_id in (…) and id in (…)` walked every mail of
 * the batch's tenants, sent ones included (13-22 ms a batch behind a backlog of 20,000 deadline mails).
 */
export async function markSent(db: DB, mails: ClaimedMail[], now: Date): Promise<void> {
  if (mails.length === 0) return
  await db.updateTable('outbox_mails').set({ sent_at: now, lease_expires_at: null, last_error: null })
    .where(byKeys('outbox_mails', mails)).execute()
}

export function markMail(db: DB, mail: ClaimedMail, changes: { sent_at?: Date; lease_expires_at: null; last_error: string | null; next_attempt_at?: Date; failed_at?: Date }) {
  return db.updateTable('outbox_mails').set(changes).where('tenant_id', '=', mail.tenant_id).where('id', '=', mail.id).execute()
}
