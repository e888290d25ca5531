import type { JsonObject, StepKind } from '../../../db/database.js'
import { moveStepReferences, stepReferences } from '../expressions/check.js'
import type { Expression } from '../expressions/schema.js'
import type { Decision, WriteValues } from './decision-schemas.js'

/*
 * A template's steps form a graph: each step leads to the next one, a decision to its two branches
 * (a position after its own, or null: the end). Branches only point forward, so every path ends and
 * no process loops; expressions read only earlier steps. Branches and step references are stored
 * as positions and follow their step when steps are inserted, moved or deleted (moveReferences).
 */

/** A step as the graph sees it. */
export interface GraphStep {
  position: number
  kind: StepKind
  name: string
  settings: JsonObject
}

/** The branches of a decision, by name. */
function branchesOf(step: Pick<GraphStep, 'kind' | 'settings'>): { yes: number | null; no: number | null } | undefined {
  if (step.kind !== 'decision') return undefined
  const decision = step.settings as Partial<Decision>
  return { yes: decision.yes ?? null, no: decision.no ?? null }
}

/** The expressions of a step, each with its JSON pointer below the step's settings field. */
function expressionsOf(step: Pick<GraphStep, 'kind' | 'settings'>): { expression: Expression; pointer: string }[] {
  if (step.kind === 'decision') {
    const condition = (step.settings as Partial<Decision>).condition
    return condition === undefined || condition === null ? [] : [{ expression: condition, pointer: '/decision/condition' }]
  }
  if (step.kind === 'writeValues') {
    return ((step.settings as Partial<WriteValues>).values ?? []).map((v, i) => ({ expression: v.value, pointer: `/writeValues/values/${i}/value` }))
  }
  return []
}

/** Every position a step's settings name: its branches and the earlier steps its expressions read. */
function referencesOf(step: GraphStep): { position: number; what: string }[] {
  const branches = branchesOf(step)
  const found: { position: number; what: string }[] = []
  if (branches) {
    for (const name of ['yes', 'no'] as const) {
      const target = branches[name]
      if (target !== null) found.push({ position: target, what: `its ${name} branch` })
    }
  }
  for (const { expression } of expressionsOf(step)) {
    for (const position of stepReferences(expression)) found.push({ position, what: 'an expression that reads it' })
  }
  return found
}

/** The settings with every position they name moved by `move`; the same object when nothing moved. */
export function moveReferences(step: GraphStep, move: (position: number) => number): JsonObject {
  if (referencesOf(step).every(({ position }) => move(position) === position)) return step.settings
  if (step.kind === 'decision') {
    const decision = step.settings as Decision
    const branch = (target: number | null) => (target === null ? null : move(target))
    const condition = decision.condition === undefined || decision.condition === null ? {} : { condition: moveStepReferences(decision.condition, move) }
    return { ...decision, ...condition, yes: branch(decision.yes), no: branch(decision.no) } as JsonObject
  }
  const values = (step.settings as WriteValues).values.map((v) => ({ ...v, value: moveStepReferences(v.value, move) }))
  return { ...step.settings, values } as JsonObject
}

/**
 * What is wrong with the positions a step names, in a template of `count` steps: a branch must point
 * after the decision and at a step that exists; an expression reads an existing earlier step.
 * `count` undefined: the template is still being built, and a branch may name a step not yet added.
 */
export function referenceErrors(step: GraphStep, count: number | undefined): { pointer: string; detail: string }[] {
  const errors: { pointer: string; detail: string }[] = []
  const branches = branchesOf(step)
  if (branches) {
    for (const name of ['yes', 'no'] as const) {
      const target = branches[name]
      if (target === null) continue
      if (target <= step.position) {
        errors.push({ pointer: `/decision/${name}`, detail: `points back to step ${target}: branches go forward only (after step ${step.position}), as a loop would never end` })
      } else if (count !== undefined && target > count) {
        errors.push({ pointer: `/decision/${name}`, detail: `points to step ${target}, which does not exist (the template has ${count} step(s)); use null to end the process` })
      }
    }
  }
  for (const { expression, pointer } of expressionsOf(step)) {
    for (const position of stepReferences(expression)) {
      if (position >= step.position) errors.push({ pointer, detail: `reads step ${position}, which does not come before step ${step.position}` })
    }
  }
  return errors
}

/** Positions no path from the first step reaches (a jump passes them on every branch). */
export function unreachablePositions(steps: GraphStep[]): number[] {
  const byPosition = new Map(steps.map((s) => [s.position, s]))
  const reached = new Set<number>()
  const queue = steps.length > 0 ? [1] : []
  while (queue.length > 0) {
    const position = queue.pop()!
    const step = byPosition.get(position)
    if (!step || reached.has(position)) continue
    reached.add(position)
    const branches = branchesOf(step)
    const next = branches ? [branches.yes, branches.no] : [position + 1]
    for (const target of next) if (target !== null && target > position) queue.push(target)
  }
  return steps.map((s) => s.position).filter((p) => !reached.has(p))
}

/** Every error of a whole template's graph; `complete`: it is to run, so branches must exist and every step be reached. */
export function graphErrors(steps: GraphStep[], options: { complete: boolean }): { step: GraphStep; detail: string }[] {
  const count = options.complete ? steps.length : undefined
  const errors = steps.flatMap((step) => referenceErrors(step, count).map((e) => ({ step, detail: `${e.pointer.slice(1)} ${e.detail}` })))
  if (options.complete) {
    for (const position of unreachablePositions(steps)) {
      const step = steps.find((s) => s.position === position)!
      errors.push({ step, detail: 'can never be reached: every branch before it jumps past it' })
    }
  }
  return errors
}

/** Steps whose settings name `position` (to refuse deleting the step there), with what names it. */
export function referencesTo(steps: GraphStep[], position: number): { step: GraphStep; what: string }[] {
  return steps.flatMap((step) => referencesOf(step).filter((r) => r.position === position).map((r) => ({ step, what: r.what })))
}

/** A step as an error message names it. */
export const stepLabel = (step: { position: number; name: string }) => `step ${step.position} "${step.name}"`

