import type { JsonObject } from '../../db/database.js'
import { cutText, oneLine } from '../../lib/storable.js'

export type MailKind = 'deadlineMissed' | 'stepFailed' | 'automaticStepFailed' | 'stepSkipped' | 'processCompleted'

export interface MailFacts {
  recipientName: string
  templateName: string
  instanceId: string
  timeZone: string
  step?: { name: string; position: number; stepCount: number; assigneeName: string | null; startedAt: Date | null; deadlineAt?: Date | null }
  property?: { id: string; fields: JsonObject } | null
  address?: { id: string; fields: JsonObject } | null
  /** How late, for a missed deadline. */
  lateMs?: number
  /** A missed deadline's step had ended when the mail was queued (it ended late, before a sweep saw it). */
  ended?: boolean
  reason?: string
  note?: string | null
}

export interface MailText {
  subject: string
  body: string
}

export function composeMail(kind: MailKind, facts: MailFacts): MailText {
  const process = `"${facts.templateName}"`
  const step = facts.step ? `"${facts.step.name}"` : ''
  const subject = {
    deadlineMissed: `Deadline missed: ${step} in ${process} (${duration(facts.lateMs ?? 0)} late)`,
    stepFailed: `Webhook step failed: ${step} in ${process}`,
    automaticStepFailed: `Automatic step failed: ${step} in ${process}`,
    stepSkipped: `Step skipped: ${step} in ${process}`,
    processCompleted: `Process completed: ${process}`
  }[kind]
  const opening = {
    deadlineMissed: facts.ended
      ? `the step ${step} of the process ${process} did not end by its deadline; it ended ${duration(facts.lateMs ?? 0)} after it.`
      : `the step ${step} of the process ${process} has not ended by its deadline; it is ${duration(facts.lateMs ?? 0)} late.`,
    stepFailed: `the webhook step ${step} of the process ${process} could not be delivered${facts.reason ? ` (${facts.reason})` : ''}. ` +
      'It is now a manual step: advance it as done, skip it, or retry the delivery.',
    automaticStepFailed: `the automatic step ${step} of the process ${process} could not be carried out${facts.reason ? ` (${facts.reason})` : ''}. ` +
      'It is now a manual step: do by hand what it should have done, then advance it as done, or skip it.',
    stepSkipped: `the step ${step} of the process ${process} was skipped.`,
    processCompleted: `the process ${process} has completed: every step has ended.`
  }[kind]
  // A name may hold line breaks (a body shows them); a subject is one line, as an e-mail step's is.
  return { subject: oneLine(subject), body: [`Hello ${facts.recipientName},`, '', opening, '', ...details(facts), '', '-- Baton'].join('\n') }
}

function details(f: MailFacts): string[] {
  const rows: [string, string | null | undefined][] = [
    ['Process', `${f.templateName} (instance ${f.instanceId})`],
    ['Step', f.step ? `${f.step.name} (step ${f.step.position} of ${f.step.stepCount})` : null],
    ['Assigned to', f.step?.assigneeName],
    ['Property', f.property ? describeRecord(f.property) : null],
    ['Address', f.address ? describeRecord(f.address) : null],
    ['Started', f.step?.startedAt ? localTime(f.step.startedAt, f.timeZone) : null],
    ['Deadline', f.step?.deadlineAt ? localTime(f.step.deadlineAt, f.timeZone) : null],
    ['Late by', f.lateMs === undefined ? null : duration(f.lateMs)],
    ['Note', f.note]
  ]
  return rows.filter((r): r is [string, string] => typeof r[1] === 'string' && r[1] !== '').map(([k, v]) => `${`${k}:`.padEnd(13)}${v}`)
}

/** A record's first four fields, each shown by its first 100 characters (a field may hold 256 KiB). */
function describeRecord(record: { id: string; fields: JsonObject }): string {
  const short = (text: string) => (text.length > 100 ? `${cutText(text, 100)}…` : text)
  const shown = Object.entries(record.fields).slice(0, 4).map(([k, v]) => `${short(k)} ${short(typeof v === 'object' ? JSON.stringify(v) : String(v))}`)
  return shown.length > 0 ? `${record.id} (${shown.join(', ')})` : record.id
}

/**
 * "25/10/2026, 02:30 (Europe/Berlin, UTC+02:00)": the wall-clock time in the tenant's zone, with its
 * offset, as the hour a DST change repeats shows the same time twice (02:30 in summer time, and an
 * hour later in winter time).
 */
function localTime(instant: Date, timeZone: string): string {
  const parts = new Intl.DateTimeFormat('en-GB', {
    timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23', timeZoneName: 'longOffset'
  }).formatToParts(instant)
  const text = parts.filter((part) => part.type !== 'timeZoneName').map((part) => part.value).join('').trim()
  // "GMT+02:00", or "GMT" alone for no offset.
  const offset = parts.find((part) => part.type === 'timeZoneName')?.value.replace(/^GMT/, '') || '+00:00'
  return `${text} (${timeZone}, UTC${offset})`
}

/** "2 days 3 hours", "45 minutes", "less than a minute". */
function duration(ms: number): string {
  const units: [string, number][] = [['day', 86_400_000], ['hour', 3_600_000], ['minute', 60_000]]
  const parts: string[] = []
  let rest = Math.max(0, ms)
  for (const [name, size] of units) {
    const count = Math.floor(rest / size)
    rest -= count * size
    if (count > 0 && parts.length < 2) parts.push(`${count} ${name}${count === 1 ? '' : 's'}`)
  }
  return parts.length > 0 ? parts.join(' ') : 'less than a minute'
}
