import type { DB } from '../../db/connect.js'
import type { JsonObject } from '../../db/database.js'
import { countChainProcesses } from './repository.js'

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
 *
 * Depth alone does not bound a chain: templates that each start two of the other (two follow-up
 * steps, or two autostarts on a field both write) make 2^11 - 1 processes ten deep from one start.
 * So each process below the first of its chain keeps that first one (process_instances.chain_root_id),
 * and a chain starts at most MAX_CHAIN_PROCESSES processes below its first; past that it stops as it
 * does ten deep.
 */
const MAX_CHAIN_DEPTH = 10

/** Processes a chain may start below its first (the one a person, a person's write or a date began). */
const MAX_CHAIN_PROCESSES = 100

/** A record's writer other than a person: a process (its writeValues step), or a provider writing back for a delivery. */
export interface ChainWriter {
  chainDepth: number
  /** The first process of the writer's chain; undefined for a person's write, or a trigger's delivery a person's write fired, whose processes begin chains of their own. */
  rootId?: string | undefined
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

/** Why the chain of first process `rootId` may start no more processes; undefined when it may. */
export async function chainTooLong(db: DB, tenantId: string, rootId: string): Promise<string | undefined> {
  const started = await countChainProcesses(db, tenantId, rootId, MAX_CHAIN_PROCESSES)
  return started < MAX_CHAIN_PROCESSES ? undefined
    : `processes that start each other (follow-ups; autostarts fired by a process's or a provider's writes) start at most ` +
      `${MAX_CHAIN_PROCESSES} below the first of their chain, and the chain of process ${rootId} has started ${started}`
}

/** The first process of a process's chain: the process itself when a person, a person's write or a date began it. */
export function chainRootOf(instance: { id: string; chain_root_id: string | null }): string {
  return instance.chain_root_id ?? instance.id
}

/** A process as a record's writer. */
export function processWriter(instance: { id: string; chain_depth: number; chain_root_id: string | null }): ChainWriter {
  return { chainDepth: instance.chain_depth, rootId: chainRootOf(instance), says: `process ${instance.id}`, data: { byInstanceId: instance.id } }
}
