import { prepareStepMail, queueStepMail } from '../../modules/instances/email-step.js'
import type { AutomaticStepRunner } from './runner-types.js'

/**
 * An automatic email step: its mail is rendered and queued in the outbox, and the step runs until the
 * SMTP server has taken it (then it is done and the process moves on) or refused it for good (then it
 * fails into a manual step): src/scheduler/email-steps.ts. A mail it cannot address (no assignee, no
 * linked address, no e-mail in it) fails the step at once; the controller hears of it.
 */
export const runEmailStep: AutomaticStepRunner = async ({ db, now, changes, instance, step }) => {
  const prepared = await prepareStepMail(db, instance, step)
  if ('problem' in prepared) {
    changes.failAutomaticStep(instance, step, `its e-mail cannot be sent: ${prepared.problem}`)
    return
  }
  await queueStepMail(db, now, instance, step, prepared.mail)
  changes.setStepState(step, 'running')
}
