import type { StepKind } from '../../db/database.js'
import type { AutomaticStepRunner } from './runner-types.js'
import { runDecision } from './decision.js'
import { runEmailStep } from './email.js'
import { runFollowUp } from './follow-up.js'
import { runWriteValues } from './write-values.js'

// The runner's types live in a leaf module, so that runners in their own files can import them.
export type { AutomaticStepRunner } from './runner-types.js'

/** The runner of each kind the scheduler carries out by itself (src/modules/templates/steps/kinds.ts). */
export const automaticStepRunners: Partial<Record<StepKind, AutomaticStepRunner>> = {
  email: runEmailStep,
  writeValues: runWriteValues,
  decision: runDecision,
  followUpProcess: runFollowUp
}
