import { cutText } from '../../lib/storable.js'
import { branchOf } from '../../modules/instances/decide.js'
import { evaluate, ExpressionError } from '../../modules/templates/expressions/evaluate.js'
import type { Decision } from '../../modules/templates/steps/decision-schemas.js'
import { expressionContext } from './expression-context.js'
import type { AutomaticStepRunner } from './runner-types.js'

/**
 * An automatic decision: its condition, evaluated on the linked records' fields and the earlier
 * steps as they are now, picks the yes or the no branch; the step ends done and the process
 * continues at the branch's step (or ends). A decision whose branches are the same step is a plain
 * jump. A condition that cannot be evaluated fails the step into a manual one: its assignee decides.
 */
export const runDecision: AutomaticStepRunner = async ({ db, now, changes, instance, step }) => {
  const settings = step.settings as Decision
  const condition = settings.condition ?? null
  if (condition === null) {
    changes.endStep(instance, step, 'done', null, 'Baton', { decision: null, continueAt: settings.yes })
    return
  }
  let value: unknown
  try {
    value = evaluate(condition, await expressionContext(db, instance, now, changes.zoneOf(instance)))
  } catch (error) {
    if (!(error instanceof ExpressionError)) throw error
    changes.failAutomaticStep(instance, step, `its condition could not be evaluated: ${error.message}`)
    return
  }
  if (typeof value !== 'boolean') {
    changes.failAutomaticStep(instance, step, `its condition gave ${cutText(JSON.stringify(value) ?? 'nothing', 50)}, not true or false`)
    return
  }
  changes.endStep(instance, step, 'done', null, 'Baton', branchOf(step, value ? 'yes' : 'no'))
}
