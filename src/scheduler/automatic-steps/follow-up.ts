import { chainRootOf, chainTooDeep, chainTooLong } from '../../modules/instances/chain.js'
import { startFailure, startProcessIn } from '../../modules/instances/service.js'
import { followUpOf } from '../../modules/templates/steps/follow-up.js'
import type { AutomaticStepRunner } from './runner-types.js'

/**
 * A followUpProcess step starts a process of another template with the same responsible user and
 * linked records, in the chore's transaction (the parent's process is locked; the child is new, so no
 * other lock is taken). The child names its parent and this step; the unique index on that step
 * (migration 0012) stops a second child even if the step were run twice. Without waitForCompletion the
 * step is done in the same commit; with it the step runs until endFollowUps sees the child end. A
 * template that is inactive or gone, or records its steps need but this process lacks, fail the step
 * into a manual one (the controller is mailed).
 */
export const runFollowUp: AutomaticStepRunner = async ({ db, now, changes, instance, step }) => {
  const settings = followUpOf(step)
  if (!settings) return changes.failAutomaticStep(instance, step, 'it names no template to start')
  // Templates that start each other, by follow-ups or autostarts, stop at a depth and a number of processes (chain.ts).
  const tooDeep = chainTooDeep(instance.chain_depth)
  if (tooDeep) return changes.failAutomaticStep(instance, step, tooDeep)
  const rootId = chainRootOf(instance)
  const tooLong = await chainTooLong(db, instance.tenant_id, rootId)
  if (tooLong) return changes.failAutomaticStep(instance, step, tooLong)
  let child
  try {
    child = (await startProcessIn(db, { now: () => now }, instance.tenant_id, {
      templateId: settings.templateId,
      responsibleUserId: instance.responsible_user_id,
      ...(instance.property_id ? { propertyId: instance.property_id } : {}),
      ...(instance.address_id ? { addressId: instance.address_id } : {})
    }, {
      parent: { instanceId: instance.id, stepId: step.id },
      chainDepth: instance.chain_depth + 1,
      chainRootId: rootId,
      startedBy: { says: `by step "${step.name}" of process "${instance.template_name}" (${instance.id})`, data: {} }
    })).instance
  } catch (error) {
    // The answer's sentence without its full stop: the step's reason is part of a sentence that ends with one.
    return changes.failAutomaticStep(instance, step, `the follow-up process could not start: ${startFailure(error).replace(/\.$/, '')}`)
  }
  changes.activity(instance, step, 'followUpStarted', `Step "${step.name}" started process "${child.templateName}" (${child.id}).`,
    { childId: child.id, templateId: child.templateId, waitForCompletion: settings.waitForCompletion })
  if (settings.waitForCompletion) changes.setStepState(step, 'running')
  else changes.endStep(instance, step, 'done', null, 'Baton')
}
