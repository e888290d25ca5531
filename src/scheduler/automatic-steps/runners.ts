import type { DB } from '../../db/connect.js'
import type { InstanceRow, InstanceStepRow, StepKind } from '../../db/database.js'
import type { ProcessChanges } from '../../modules/instances/process-changes.js'
import { runFollowUp } from './follow-up.js'

/** What a runner gets: the chore's transaction, in which the step's process is locked. */
export interface AutomaticStepContext {
  db: DB
  now: Date
  changes: ProcessChanges
  instance: InstanceRow
  step: InstanceStepRow
}

/**
 * Carries out one due automatic step of its kind. It describes the outcome through `changes`: the step
 * ends (endStep) and the process moves on in the same commit, it fails into a manual step
 * (failAutomaticStep), or it waits in another state for something outside the transaction (an e-mail
 * for the SMTP server's answer). A runner that leaves the step as it was fails it.
 */
export type AutomaticStepRunner = (context: AutomaticStepContext) => Promise<void>

/** The runner of each kind the scheduler carries out by itself (src/modules/templates/steps/kinds.ts). */
export const automaticStepRunners: Partial<Record<StepKind, AutomaticStepRunner>> = {
  followUpProcess: runFollowUp
}
