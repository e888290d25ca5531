import type { DB } from '../../db/connect.js'
import type { InstanceRow, InstanceStepRow } from '../../db/database.js'
import { conflict, unprocessable } from '../../errors.js'
import { templateErrors } from '../templates/steps/email.js'
import { rejectIfInvalid } from '../templates/steps/validation.js'
import { prepareStepMail, queueStepMail } from './email-step.js'
import type { Advance } from './schemas.js'

/**
 * A manual email step advanced as done sends its mail: rendered now (with the texts the assignee
 * edited, which are templates like the step's), queued in the advance's own transaction, so the mail
 * is queued exactly when the step ends. Skipping sends nothing; `email` on any other advance is a 422.
 * Returns whether it queued a mail (an API-only process then announces it to the schedulers).
 */
export async function sendManualEmail(db: DB, now: Date, instance: InstanceRow, step: InstanceStepRow, input: Advance): Promise<boolean> {
  const sends = step.kind === 'email' && !step.automatic && step.state === 'due' && input.outcome === 'done'
  if (!sends) {
    if (input.email === undefined) return false
    throw unprocessable('Only a manual email step advanced as done sends a mail: leave email out.',
      [{ pointer: '/body/email', detail: `step "${step.name}" (${step.kind}, ${step.state}) sends no mail when it is ${input.outcome}` }])
  }
  const edit = input.email ?? {}
  const refersTo = { property: step.refers_to_property, address: step.refers_to_address }
  rejectIfInvalid('The e-mail is not valid', [
    ...(edit.subject === undefined ? [] : templateErrors(edit.subject, '/body/email/subject', refersTo)),
    ...(edit.body === undefined ? [] : templateErrors(edit.body, '/body/email/body', refersTo))
  ])
  const prepared = await prepareStepMail(db, instance, step, edit)
  if ('tooLong' in prepared) {
    throw unprocessable(`Step "${step.name}" cannot send its e-mail: ${prepared.problem}. Send a shorter body in email.body, or skip the step.`,
      [{ pointer: '/body/email/body', detail: prepared.problem }])
  }
  if ('problem' in prepared) {
    throw conflict(`Step "${step.name}" cannot send its e-mail: ${prepared.problem}. Fix that and advance again, or skip the step.`)
  }
  await queueStepMail(db, now, instance, step, prepared.mail)
  return true
}
