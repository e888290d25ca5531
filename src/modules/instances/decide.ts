import type { InstanceStepRow } from '../../db/database.js'
import { unprocessable } from '../../errors.js'
import type { Decision } from '../templates/steps/decision-schemas.js'
import type { Branch } from './process-changes.js'
import type { Advance } from './schemas.js'

/** The branch a decision step's settings give for yes or no. */
export function branchOf(step: InstanceStepRow, decision: 'yes' | 'no'): Branch {
  const settings = step.settings as Decision
  return { decision, continueAt: settings[decision] ?? null }
}

/**
 * The branch a person's advance takes: a decision marked done needs "decision": "yes" or "no"
 * (422 without one); other steps take none.
 */
export function decisionBranch(step: InstanceStepRow, input: Advance): Branch | undefined {
  if (step.kind !== 'decision') {
    if (input.decision === undefined) return undefined
    throw unprocessable(`Step "${step.name}" is a ${step.kind} step, not a decision: leave decision out.`,
      [{ pointer: '/body/decision', detail: `only a decision step takes a decision` }])
  }
  if (input.decision === undefined) {
    throw unprocessable(`Step "${step.name}" is a decision: advance with "decision": "yes" or "no".`,
      [{ pointer: '/body/decision', detail: 'required to decide a decision step' }])
  }
  return branchOf(step, input.decision)
}
