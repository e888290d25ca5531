import type { JsonObject, StepKind } from '../../../db/database.js'

/*
 * What sets the kinds of steps apart beyond their common fields. A webhook step is carried out by its
 * delivery and a task by a person; the other kinds keep their own settings (template_steps.settings,
 * copied into instance_steps.settings when a process starts) and some of them the scheduler carries
 * out by itself when they fall due (src/scheduler/automatic-steps).
 */

/** Kinds whose settings say whether a person or the scheduler carries them out. */
const MODED_KINDS: ReadonlySet<StepKind> = new Set(['email', 'decision'])
/** Kinds the scheduler always carries out. */
const AUTOMATIC_KINDS: ReadonlySet<StepKind> = new Set(['writeValues', 'followUpProcess'])

/** Whether the scheduler carries out a step of this kind and settings once it is due (instance_steps.automatic). */
export function isAutomatic(kind: StepKind, settings: JsonObject): boolean {
  if (AUTOMATIC_KINDS.has(kind)) return true
  return MODED_KINDS.has(kind) && settings.mode === 'automatic'
}

/** A step of this kind, as an error message names it: "a task step", "an email step". */
export function kindPhrase(kind: StepKind): string {
  return `a${kind === 'email' ? 'n' : ''} ${kind} step`
}
