import type { JsonObject } from '../../db/database.js'

/**
 * Work that Baton's own writes set off. A follow-up step starts its child; a writeValues step's
 * write, or a provider's write-back with a call's apiClaim, can fire a template's autostart and
 * other services' webhook triggers. Templates that start each other, or two providers that write
 * back what the other's trigger watches, would set each other off without end. So each process
 * keeps how many writers above it set it off (process_instances.chain_depth), and so does each
 * trigger's delivery (deliveries.chain_depth): 0 for what a person, a person's record write or a
 * date began; one more than its writer otherwise. A process or a write-back this deep sets off no
 * more: a follow-up step fails into a manual one, an autostart is recorded as skipped, and the
 * triggers that would have fired are logged on the record as not fired.
 */
export const MAX_CHAIN_DEPTH = 10

/** A record's writer other than a person: a process (its writeValues step), or a provider writing back for a delivery. */
export interface ChainWriter {
  chainDepth: number
  /** "process <id>", "the provider of delivery <id>". */
  says: string
  /** What an autostarted process's processStarted activity keeps of its writer. */
  data: JsonObject
}

/** Why `what`, at this depth, may not set off more work; undefined when it may. */
export function chainTooDeep(depth: number, what = 'this process'): string | undefined {
  return depth < MAX_CHAIN_DEPTH ? undefined
    : `work that Baton's writes set off (follow-ups; autostarts and webhook triggers fired by a process's or a provider's writes) ` +
      `chains at most ${MAX_CHAIN_DEPTH} deep, and ${what} is ${depth} down its chain`
}

/** A process as a record's writer. */
export function processWriter(instance: { id: string; chain_depth: number }): ChainWriter {
  return { chainDepth: instance.chain_depth, says: `process ${instance.id}`, data: { byInstanceId: instance.id } }
}
