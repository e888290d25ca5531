import { sql } from '../db/kysely.js'
import { byKeys } from '../db/by-keys.js'
import type { DB } from '../db/connect.js'
import type { InstanceRow, InstanceStepRow } from '../db/database.js'
import { cutText } from '../lib/storable.js'
import { ProcessChanges } from '../modules/instances/process-changes.js'
import * as runtime from '../modules/instances/runtime-repository.js'
import { batchOrEach, rethrow, type RowErrorHandler } from './isolated.js'
import { tenantNotDeleting } from './tenant-not-deleting.js'

/** A step's mail is tried this often before it is given up (10 s doubling: the eighth try comes about 21 minutes after the first). */
export const STEP_MAIL_MAX_ATTEMPTS = 8

/**
 * The SMTP commands whose replies speak of the mail itself: its recipient (RCPT TO) and its
 * message (DATA, and the reply to its final dot). A 5xx to the greeting, EHLO, AUTH or MAIL FROM
 * refuses Baton as the server is set up (credentials, sender), and every mail would get it.
 */
const MAIL_COMMANDS = new Set(['RCPT TO', 'DATA'])

/**
 * Whether a step's mail that failed to send is given up rather than tried again: the SMTP server
 * refused it for good (a 5xx reply to its recipient or its message, e.g. 550 for an unknown
 * mailbox), or it has used its attempts. The controller's own mails are never given up
 * (src/scheduler/send-mail.ts).
 */
export function givesUpStepMail(error: unknown, attempts: number): boolean {
  const { responseCode: code } = (error ?? {}) as { responseCode?: unknown }
  const refusedForGood = aboutTheMail(error) && typeof code === 'number' && code >= 500 && code < 600
  return refusedForGood || attempts >= STEP_MAIL_MAX_ATTEMPTS
}

/**
 * Whether a failed send was the server's reply to this mail (its recipient or its message), not a
 * failure every mail would meet (no connection, TLS, the greeting, EHLO, a refused login or sender).
 * A 421 closes the connection whatever the command: the server is going away.
 */
export function aboutTheMail(error: unknown): boolean {
  const { responseCode: code, command } = (error ?? {}) as { responseCode?: unknown; command?: unknown }
  return typeof code === 'number' && code !== 421 && typeof command === 'string' && MAIL_COMMANDS.has(command)
}

interface SettledMail {
  tenant_id: string
  id: string
  instance_id: string | null
  step_id: string | null
  to_address: string
  subject: string
  sent_at: Date | null
  last_error: string | null
  attempt_count: number
}

/**
 * Tells email steps what became of their mails, in one transaction with their processes locked: a
 * step still running on its mail is done once the mail was sent (the process moves on in the same
 * commit) and fails into a manual step once it was given up; either way an activity on the linked
 * records says which mail went to whom. Each mail is settled once (SKIP LOCKED, and the flag is
 * cleared in the same commit), so two workers never end a step twice, and a crash between sending
 * and settling leaves the mail for the next call. When a batch fails for another reason than the
 * database, its mails are settled one by one, and one that fails on its own fails its step into a
 * manual one (giveUpMail), so a single bad row never holds back every tenant's email steps.
 */
export async function settleStepMails(db: DB, now: Date, limit: number, onError: RowErrorHandler = rethrow): Promise<number> {
  return batchOrEach({
    batch: () => settleBatch(db, now, limit),
    candidates: () => mailsToSettle(db, limit),
    one: (mail) => settleBatch(db, now, 1, mail),
    giveUp: (mail) => giveUpMail(db, now, mail)
  }, onError)
}

type MailKey = Pick<SettledMail, 'tenant_id' | 'id'>

/**
 * The mails whose outcome their steps have not heard of (all, or the one named), of tenants not being
 * deleted; with `lock`, locked SKIP LOCKED.
 */
async function mailsToSettle(db: DB, limit: number, options: { lock?: boolean; only?: MailKey } = {}): Promise<SettledMail[]> {
  const { only } = options
  const { rows } = await sql<SettledMail>`
    select tenant_id, id, instance_id, step_id, to_address, subject, sent_at, last_error, attempt_count from outbox_mails
    where settle_step and (sent_at is not null or failed_at is not null) and ${tenantNotDeleting('outbox_mails.tenant_id')}
    ${only ? sql`and tenant_id = ${only.tenant_id} and id = ${only.id}` : sql``}
    order by created_at
    limit ${limit}
    ${options.lock ? sql`for update skip locked` : sql``}
  `.execute(db)
  return rows
}

/** The mail's process, locked, and its step; undefined for a mail of no step's, or one whose process is gone. */
async function lockedStepOf(trx: DB, mail: SettledMail): Promise<{ instance: InstanceRow; step: InstanceStepRow } | undefined> {
  const instance = mail.instance_id ? await runtime.lockInstance(trx, mail.tenant_id, mail.instance_id) : undefined
  const step = instance && mail.step_id ? await runtime.findStep(trx, mail.tenant_id, mail.step_id) : undefined
  return instance && step ? { instance, step } : undefined
}

/** Whether the step still runs on its mail: its process's current step, waiting for the mail's outcome. */
function waitsOnMail(instance: InstanceRow, step: InstanceStepRow): boolean {
  return instance.status === 'running' && instance.current_position === step.position && step.state === 'running'
}

function clearSettle(trx: DB, rows: SettledMail[]) {
  return trx.updateTable('outbox_mails').set({ settle_step: false })
    .where(byKeys('outbox_mails', rows)).execute()
}

function settleBatch(db: DB, now: Date, limit: number, only?: MailKey): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const rows = await mailsToSettle(trx, limit, { lock: true, ...(only ? { only } : {}) })
    if (rows.length === 0) return 0
    const changes = new ProcessChanges(trx, now, await runtime.findTimeZones(trx, rows.map((r) => r.tenant_id)))
    // Processes are locked one by one in id order, so two settling workers cannot deadlock.
    for (const mail of [...rows].sort((a, b) => (a.instance_id ?? '').localeCompare(b.instance_id ?? ''))) {
      const locked = await lockedStepOf(trx, mail)
      if (locked) settle(changes, locked.instance, locked.step, mail)
    }
    await changes.flush()
    await clearSettle(trx, rows)
    return rows.length
  })
}

/**
 * A mail whose settling failed on its own: a step still running on it fails into a manual step, with
 * nothing of the mail in the reason (what it held may be what failed), and the mail is settled.
 */
function giveUpMail(db: DB, now: Date, only: MailKey): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const [mail] = await mailsToSettle(trx, 1, { lock: true, only })
    if (!mail) return false
    const locked = await lockedStepOf(trx, mail)
    if (locked && waitsOnMail(locked.instance, locked.step)) {
      const changes = new ProcessChanges(trx, now, await runtime.findTimeZones(trx, [mail.tenant_id]))
      changes.failAutomaticStep(locked.instance, locked.step, 'an internal error stopped Baton from recording what became of its e-mail; see the mail log')
      changes.bump(locked.instance)
      await changes.flush()
    }
    await clearSettle(trx, [mail])
    return true
  })
}

function settle(changes: ProcessChanges, instance: InstanceRow, step: InstanceStepRow, mail: SettledMail): void {
  const waiting = waitsOnMail(instance, step)
  const data = { mailId: mail.id, to: mail.to_address, subject: mail.subject }
  if (mail.sent_at) {
    changes.activity(instance, step, 'emailSent', `E-mail "${mail.subject}" sent to ${mail.to_address} (step "${step.name}").`, data)
    if (waiting) changes.endStep(instance, step, 'done', null, `e-mail to ${mail.to_address}`)
  } else {
    // Given up after its attempts, the server may never have answered (down, unreachable, refusing Baton's login).
    const last = cutText(mail.last_error ?? 'no reason given', 300)
    const reason = mail.attempt_count >= STEP_MAIL_MAX_ATTEMPTS
      ? `the e-mail to ${mail.to_address} could not be sent in ${mail.attempt_count} attempts (the last: ${last})`
      : `the mail server refused the e-mail to ${mail.to_address} (${last})`
    if (waiting) changes.failAutomaticStep(instance, step, reason)
    else changes.activity(instance, step, 'emailRefused', `E-mail "${mail.subject}" to ${mail.to_address} was not sent: ${reason}.`, data)
  }
  if (waiting) changes.bump(instance)
}
