import type { DB } from '../../db/connect.js'
import type { InstanceRow, InstanceStepRow } from '../../db/database.js'
import type { ProcessChanges } from '../../modules/instances/process-changes.js'

/** What a runner gets: the chore's transaction, in which the step's process is locked. */
interface AutomaticStepContext {
  db: DB
  now: Date
  changes: ProcessChanges
  instance: InstanceRow
  step: InstanceStepRow
  /** The records the batch's writeValues steps write, locked before its first step (lockedRecordKey). */
  lockedRecords: ReadonlySet<string>
}

/**
 * Carries out one due automatic step of its kind. It describes the outcome through `changes`: the step
 * ends (endStep) and the process moves on in the same commit, it fails into a manual step
 * (failAutomaticStep), or it waits in another state for something outside the transaction (an e-mail
 * for the SMTP server's answer). A runner that leaves the step as it was fails it.
 */
export type AutomaticStepRunner = (context: AutomaticStepContext) => Promise<void>
