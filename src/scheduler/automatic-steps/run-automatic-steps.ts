import type { DB } from '../../db/connect.js'
import { ProcessChanges } from '../../modules/instances/process-changes.js'
import { findTimeZones } from '../../modules/instances/runtime-repository.js'
import { cutText } from '../../lib/storable.js'
import { databaseRefusal } from '../../db/errors.js'
import { batchOrEach, rethrow, type RowErrorHandler } from '../isolated.js'
import { anyDueAutomaticStep, findDueAutomaticStepIds, lockDueAutomaticSteps } from '../step-chores-repository.js'
import { automaticStepRunners } from './runners.js'
import { lockRecordsToWrite } from './write-values.js'

/**
 * Carries out due automatic steps (an automatic e-mail, values to write, a decision, a follow-up
 * process), a batch in one transaction with their processes locked (SKIP LOCKED: workers take disjoint
 * batches, and each step is carried out once). Each step's outcome and the start of the step after it
 * are written in the same commit; an automatic step that follows starts due and is taken by the next
 * pass. When a batch fails for a reason other than the database, its steps are tried one by one, and
 * a step that fails on its own turns into a manual step, so it is not tried on every pass.
 */
export async function runAutomaticSteps(db: DB, now: Date, limit: number, onError: RowErrorHandler = rethrow): Promise<number> {
  // Most passes find none: one indexed read then, instead of a transaction.
  if (!(await anyDueAutomaticStep(db))) return 0
  return batchOrEach({
    batch: () => runBatch(db, now, limit),
    candidates: () => findDueAutomaticStepIds(db, limit),
    one: ({ id }) => runBatch(db, now, 1, id),
    giveUp: async ({ id }, error) => (await giveUp(db, now, id, error)) > 0
  }, onError)
}

function runBatch(db: DB, now: Date, limit: number, onlyStep?: string): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const due = await lockDueAutomaticSteps(trx, limit, onlyStep)
    if (due.length === 0) return 0
    const changes = new ProcessChanges(trx, now, await findTimeZones(trx, due.map((d) => d.instance.tenant_id)))
    // All at once and in one order: steps locking theirs one by one could cross another batch's.
    const lockedRecords = await lockRecordsToWrite(trx, due)
    for (const { instance, step } of due) {
      const runner = automaticStepRunners[step.kind]
      if (runner) await runner({ db: trx, now, changes, instance, step, lockedRecords })
      if (!changes.changes(step)) changes.failAutomaticStep(instance, step, `Baton cannot carry out ${step.kind} steps by itself`)
      changes.bump(instance)
    }
    await changes.flush()
    return due.length
  })
}

/**
 * A step whose runner failed on its own: it turns into a manual step, in a transaction of its own. A
 * database's refusal is said without its message, which names tables and constraints (the log has it).
 */
async function giveUp(db: DB, now: Date, stepId: string, error: unknown): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const [locked] = await lockDueAutomaticSteps(trx, 1, stepId)
    if (!locked) return 0
    const changes = new ProcessChanges(trx, now, await findTimeZones(trx, [locked.instance.tenant_id]))
    const reason = databaseRefusal(error) ?? (error instanceof Error ? error.message : String(error))
    changes.failAutomaticStep(locked.instance, locked.step, `an internal error stopped it (${cutText(reason, 200)})`)
    changes.bump(locked.instance)
    await changes.flush()
    return 1
  })
}
