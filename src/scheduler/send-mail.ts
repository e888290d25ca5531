import type { Mailer } from '../adapters/mailer.js'
import type { DB } from '../db/connect.js'
import { backoffMs, type Backoff } from '../lib/backoff.js'
import type { Logger } from '../lib/logger.js'
import type { BatonMetrics } from '../lib/metrics.js'
import { aboutTheMail, givesUpStepMail, settleStepMails } from './email-steps.js'
import type { RowErrorHandler } from './isolated.js'
import { claimMails, markMail, markSent, releaseMails, type ClaimedMail } from './mail-repository.js'
import { retryTransient } from './retry-transient.js'

const LEASE_MS = 120_000
/** Marks of what became of the mails are tried again while the database is away, until this long before the lease ends. */
const LEASE_MARGIN_MS = 10_000
const SEND_WINDOW = 8
/** 10 s doubling to an hour. */
const MAIL_BACKOFF: Backoff = { firstMs: 10_000, maxMs: 3_600_000 }
/** How long a worker leaves its SMTP server alone after a failure of the server's own: 10 s doubling to 5 minutes. */
const SERVER_MAX_HOLD_MS = 300_000
const SERVER_BACKOFF: Backoff = { firstMs: 10_000, maxMs: SERVER_MAX_HOLD_MS }

/**
 * What a worker knows of its SMTP server from one pass to the next (`mailServerState()`). A failure
 * that is the server's and not one mail's (no connection, TLS, a refused login, the greeting, the
 * sender) would meet every mail: each pass opened its whole window of sends against it, every mail
 * it had not tried was due again at once, and a relay refusing the login was sent eight failed logins
 * about every second (Microsoft 365, Gmail or fail2ban lock an account or address out for fewer).
 * After such a failure the worker sends no mail until `heldUntil`, and then one mail alone before it
 * opens the window again; so does a worker's first pass, before its server has answered a mail.
 */
export interface MailServerState {
  /** Failures of the server's own in a row. */
  failures: number
  /** No mail is claimed before this time (ms, on the passes' clock). */
  heldUntil: number
  /** The server has answered a mail (took it, or refused that mail) since its last failure. */
  answered: boolean
}

export function mailServerState(): MailServerState {
  return { failures: 0, heldUntil: 0, answered: false }
}

/**
 * A controller's mail (a missed deadline, a failed or skipped step, a completed process) is Baton's own
 * notice (RFC 3834): an out-of-office reply is not sent back to MAIL_FROM for it. An email step's mail
 * is the tenant's message to its recipient and goes without.
 */
const CONTROLLER_MAIL_HEADERS = { 'Auto-Submitted': 'auto-generated' }

export interface MailPass {
  sent: number
  /** More mails were due than this pass claimed, and none failed: another pass may send them now. */
  more: boolean
}

/**
 * Sends queued mails. A claim leases each mail so one worker sends it; a failed send stays queued
 * and is retried with backoff (never dropped), except an email step's mail, which is given up when the
 * SMTP server refuses it for good or after its attempts (src/scheduler/email-steps.ts). Email steps
 * then hear what became of their mails. A mail sent just before a crash may go out twice; its
 * stable Message-ID lets the receiving side fold the copies.
 */
export async function sendQueuedMail(
  db: DB, mailer: Mailer,
  options: {
    now: Date; from: string; limit: number; log?: Pick<Logger, 'warn'>; metrics?: Pick<BatonMetrics, 'mails'>
    /** The stopping worker's grace is over: the marks stop waiting for the database. */
    cutOff?: AbortSignal
    /** Told of a step mail whose settling failed on its own (the others go on); without it, that fails the pass. */
    onError?: RowErrorHandler
    /** The worker's knowledge of its server across passes; without it, every pass opens its whole window. */
    server?: MailServerState
  }
): Promise<MailPass> {
  const { now, server } = options
  // A hold longer than its longest is a clock stepped back since it began: it is over.
  const held = server !== undefined && now.getTime() < server.heldUntil && server.heldUntil - now.getTime() <= SERVER_MAX_HOLD_MS
  // The lease runs from `now`, before the claim: a claim that waited for a connection or a lock has
  // used part of it already, so the time left is counted from here, not from the claim's end. It is
  // counted on a timer that only goes forward: on this machine's clock, a step back let lanes start
  // sends after the lease had ended (another worker takes the mail back then, and sends it again).
  const claimedAt = performance.now()
  const claim = held ? { mails: [], more: false } : await claimMails(db, { now, leaseUntil: new Date(now.getTime() + LEASE_MS), limit: options.limit })
  const rows = claim.mails
  // A mail the server took is sent: losing its mark with a connection would send it again once the
  // lease ends, so a mark waits for the database while the lease lasts (measured on this process's
  // own timer, as the sends are), or until a stopping worker's grace is over: given up at the signal
  // itself, a mark that met the database away sent the mail again, although it came back within the grace.
  const until = new Date(claimedAt + LEASE_MS - LEASE_MARGIN_MS)
  const mark = <T>(write: () => Promise<T>) => retryTransient(write, { until, now: () => new Date(performance.now()), signal: options.cutOff })
  // After its first, a lane starts a send only while it would end, at its deadline, before the marks'
  // time is up: one still running when the lease ends would be sent again by the worker that claims
  // the mail next. Mails a slow server left no time for go back, untried, to the next claim.
  const startBy = until.getTime() - (mailer.sendDeadlineMs ?? 0)
  const sent: ClaimedMail[] = []
  const untried = [...rows]
  /** Mails whose connection the server turned away at its greeting, with what it said. */
  const turnedAway: { mail: ClaimedMail; error: unknown }[] = []
  let failure: unknown
  /** The first failure that was the server's, not one mail's. */
  let serverFailure: unknown
  let failed = 0
  /** A failed send: a step's mail refused for good (or out of attempts) is given up; any other waits its backoff. */
  const fail = async (mail: ClaimedMail, error: unknown, tried = true): Promise<'givenUp' | 'putOff'> => {
    if (tried) failed += 1
    // A greeting that turns Baton away (421, the server's connections full, maybe with other workers'
    // ones) is no lockout risk and may pass at once: those mails wait their own backoff, as before.
    if (!aboutTheMail(error) && !turnedAwayAtGreeting(error)) serverFailure ??= error
    if (mail.step_id !== null && givesUpStepMail(error, mail.attempt_count)) {
      await mark(() => markMail(db, mail, { lease_expires_at: null, last_error: String(error), failed_at: now }))
      options.log?.warn({ err: error, mailId: mail.id, stepId: mail.step_id, attempts: mail.attempt_count },
        'an email step\'s mail was given up: the SMTP server refused it for good, or it used its attempts; it is not sent')
      return 'givenUp'
    }
    failure ??= error
    const delay = backoffMs(MAIL_BACKOFF, mail.attempt_count)
    await mark(() => markMail(db, mail, { lease_expires_at: null, last_error: String(error), next_attempt_at: new Date(now.getTime() + delay) }))
    return 'putOff'
  }
  // A window of mails in flight at once: one after another, an SMTP exchange waits on the network
  // (about 100 ms a mail here, 200 mails in 21 s; 200 at once took 0.4 s). After a failure no new one
  // starts; after one mail's failure the rest go back untouched, after the server's they wait with it (below).
  const lane = async (most = Infinity) => {
    for (let first = true, tried = 0; tried < most && failure === undefined && serverFailure === undefined && untried.length > 0 && (first || performance.now() <= startBy); first = false, tried++) {
      const mail = untried.shift()!
      try {
        await mailer.send({
          from: options.from, to: mail.to_address, subject: mail.subject, text: mail.body, messageId: `<${mail.id}@baton>`,
          ...(mail.step_id === null ? { headers: CONTROLLER_MAIL_HEADERS } : {})
        })
        sent.push(mail)
        if (server) server.answered = true
      } catch (error) {
        if (server && aboutTheMail(error)) server.answered = true
        // Turned away before it was offered: this lane stops, and the pass decides below what it was.
        if (turnedAwayAtGreeting(error)) return void turnedAway.push({ mail, error })
        // Refused for good (or out of attempts): the server answers, so the other mails go on.
        if ((await fail(mail, error)) === 'givenUp') continue
      }
    }
  }
  // A server that has not answered a mail since its last failure (or since the worker started) is
  // sent one mail alone first: against a refused login, one failed login a pass, not one a lane.
  // A lane whose mark gave up (the database away for the lease) stops; the others go on, and the mails
  // the server took are marked sent all the same, or they would go out again once the lease ends.
  const probe = server?.answered === false ? await Promise.allSettled([lane(1)]) : []
  const opened = server?.answered === false ? [] : await Promise.allSettled(Array.from({ length: Math.min(SEND_WINDOW, untried.length) }, () => lane()))
  const lanes = [...probe, ...opened]
  await mark(() => markSent(db, sent, now))
  // A server that took mails on one connection and turned another away at its greeting (421, too many
  // connections) limits how many it takes at once: the mails it turned away were never offered, and go
  // back untried, their attempt not counted. Taking none, it is down for all of them: they wait their
  // backoff, as any failure does.
  const limited = sent.length > 0
  if (limited) untried.push(...turnedAway.map(({ mail }) => mail))
  // Their marks may give up as a lane's may: the untried mails still go back below.
  const putOff = limited ? [] : await Promise.allSettled(turnedAway.map(({ mail, error }) => fail(mail, error)))
  // A failure of the server's own meets every mail: the mails of the pass not yet tried wait their
  // backoff with the one that met it, an attempt counted, as if each had been tried (on one connection
  // tried, not one a mail), and a step's mail out of attempts is given up as before.
  // So does a greeting that turned every lane away (the server down for all of them), without a hold.
  const downForAll = serverFailure ?? (limited ? undefined : turnedAway[0]?.error)
  const putOffUntried = downForAll === undefined ? [] : await Promise.allSettled(untried.splice(0).map((mail) => fail(mail, downForAll, false)))
  options.metrics?.mails(sent.length, failed)
  const broken = [...lanes, ...putOff, ...putOffUntried].find((settled) => settled.status === 'rejected')
  if (untried.length > 0) {
    const released = mark(() => releaseMails(db, untried))
    // After a lane's mark gave up, the release is still tried (as the marks are); failing too, the lease sends them later.
    await (broken ? released.catch(() => undefined) : released)
  }
  if (server && serverFailure !== undefined) {
    server.failures += 1
    server.answered = false
    server.heldUntil = now.getTime() + backoffMs(SERVER_BACKOFF, server.failures)
  } else if (server?.answered) server.failures = 0
  if (broken) throw broken.reason
  if (server && serverFailure !== undefined) {
    options.log?.warn({ err: serverFailure, putOff: putOffUntried.length, heldForMs: server.heldUntil - now.getTime() },
      'sending a mail failed at the SMTP server itself (connection, TLS, login, greeting or sender): the pass\'s mails stay queued with their backoff, and none is tried for heldForMs, then one alone')
  } else if (failure !== undefined) options.log?.warn({ err: failure, putBack: untried.length }, 'sending a mail failed; it stays queued and is retried')
  else if (limited && turnedAway.length > 0) {
    options.log?.warn({ err: turnedAway[0]!.error, putBack: untried.length }, 'the SMTP server turned connections away at its greeting while it took mails on others (it limits connections); those mails go back untried')
  }
  // Steps hear of their mails right away; an idle pass also settles what a crash left behind.
  const stepMails = rows.length === 0 || rows.some((mail) => mail.step_id !== null && !untried.includes(mail))
  if (stepMails) await settleStepMails(db, now, options.limit, options.onError)
  return { sent: sent.length, more: (claim.more || untried.length > 0) && failure === undefined && serverFailure === undefined }
}

/**
 * A 4xx reply to the greeting (421: too many connections, try again later): the server turned the
 * connection away before any mail was offered on it, so the failure says nothing of the mail.
 */
function turnedAwayAtGreeting(error: unknown): boolean {
  const { code, command, responseCode } = (error ?? {}) as { code?: unknown; command?: unknown; responseCode?: unknown }
  return code === 'EPROTOCOL' && command === 'CONN' && typeof responseCode === 'number' && responseCode >= 400 && responseCode < 500
}
