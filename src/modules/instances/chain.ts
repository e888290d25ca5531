/**
 * Processes that start processes: a follow-up step starts its child, and a writeValues step's write
 * can fire another template's autostart. Templates that start each other, through either or both,
 * would start processes without end. Each process keeps how many processes above it started it
 * (process_instances.chain_depth: 0 for a start by a person, a person's record write or a date), and
 * a process this deep starts no more: its follow-up step fails into a manual one, and the autostart
 * its write fires is recorded as skipped.
 */
export const MAX_CHAIN_DEPTH = 10

/** Why a process at this depth may not start another; undefined when it may. */
export function chainTooDeep(depth: number): string | undefined {
  return depth < MAX_CHAIN_DEPTH ? undefined
    : `processes that start processes (follow-ups, autostarts fired by a process's writes) chain at most ${MAX_CHAIN_DEPTH} deep, and this one is ${depth} down its chain`
}
