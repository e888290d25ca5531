import type { TargetPolicy } from '../../../adapters/address-policy.js'
import type { DB } from '../../../db/connect.js'
import type { TemplateStepRow } from '../../../db/database.js'
import { unprocessable, type FieldError } from '../../../errors.js'
import { secretProblem } from '../../marketplace/services/secret-strength.js'
import { queryCallProblem, webhookUrlProblem } from '../../marketplace/services/webhook-url.js'
import { holdTenantUser } from '../../users/repository.js'
import { followUpErrors, followUpOf } from './follow-up.js'
import { kindPhrase } from './kinds.js'
import * as lookup from './lookup-repository.js'
import type { StepDraft } from '../mapping.js'
import { emailStepErrors } from './email.js'
import { validateFreeParameters, validateStepParameters, type ParameterCheck } from './parameters.js'
import { STEP_SETTINGS_MAX_BYTES, type Target } from './schemas.js'
import { jsonBytes } from '../../../lib/json-limits.js'
import { activationGraphErrors } from './references.js'

/** A free target as the request gave it: the policy its URL must pass, and its secret (only when given, as it is write-only). */
export interface TargetRequest {
  policy: TargetPolicy
  secret: string | undefined
}

/**
 * Everything wrong with a step beyond its schema, and its parameters with defaults filled in. `saved`:
 * the step as saved, when this is an edit of it (validateStepParameters).
 */
export async function checkStep(
  db: DB, tenantId: string, draft: StepDraft, target: TargetRequest, templateId: string, saved?: Pick<StepDraft, 'serviceId' | 'parameters'>
): Promise<ParameterCheck> {
  const service = draft.kind === 'task' ? { parameters: draft.parameters, errors: taskErrors(draft) }
    : draft.kind !== 'webhook' ? { parameters: draft.parameters, errors: [...taskErrors(draft), ...kindErrors(draft)] }
    : draft.target !== null ? checkTarget(draft, draft.target, target)
    : await checkWebhook(db, tenantId, draft.serviceId, draft.parameters, saved?.serviceId === draft.serviceId ? saved.parameters : undefined)
  const errors = [
    ...responsibilityErrors(draft), ...await userErrors(db, tenantId, draft), ...service.errors,
    ...emailStepErrors(draft), ...await followUpErrors(db, tenantId, templateId, draft),
    ...sizeErrors({ parameters: service.parameters, writeValues: draft.writeValues, decision: draft.decision })
  ]
  return { parameters: service.parameters, errors }
}

/** Each setting within STEP_SETTINGS_MAX_BYTES as JSON (the body's depth was checked before). */
function sizeErrors(settings: Record<'parameters' | 'writeValues' | 'decision', unknown>): FieldError[] {
  return Object.entries(settings).flatMap(([name, value]) => {
    const bytes = jsonBytes(value)
    return bytes <= STEP_SETTINGS_MAX_BYTES ? [] : [{ pointer: `/body/${name}`, detail: `${bytes} bytes as JSON, more than ${STEP_SETTINGS_MAX_BYTES}` }]
  })
}

/** One 422 naming every error, led by a sentence such as "The step is not valid". */
export function rejectIfInvalid(lead: string, errors: FieldError[]): void {
  if (errors.length === 0) return
  throw unprocessable(`${lead}: ${errors.map((e) => `${e.pointer} ${e.detail}`).join('; ')}.`, errors)
}

/** A step of any kind but webhook calls nothing. */
function taskErrors(draft: StepDraft): FieldError[] {
  const errors: FieldError[] = []
  const kind = kindPhrase(draft.kind)
  if (draft.serviceId !== null) errors.push({ pointer: '/body/serviceId', detail: `${kind} calls no service: leave serviceId null` })
  if (draft.target !== null) errors.push({ pointer: '/body/target', detail: `${kind} calls no target: leave target null` })
  if (Object.keys(draft.parameters).length > 0) {
    errors.push({ pointer: '/body/parameters', detail: `${kind} takes no parameters: leave parameters empty` })
  }
  return errors
}

/** The settings of the kinds beyond webhook and task. */
function kindErrors(draft: StepDraft): FieldError[] {
  if (draft.kind === 'email') return [] // emailStepErrors
  // writeValues and decision: checked with their position in the template (decision-validation.ts).
  if (draft.kind === 'writeValues' || draft.kind === 'decision') return []
  if (draft.kind === 'followUpProcess') return []
  return [{ pointer: '/body/kind', detail: `steps of kind ${draft.kind} cannot be saved yet` }]
}

function responsibilityErrors(draft: StepDraft): FieldError[] {
  if (draft.responsibility === 'propertyMaintainer' && !draft.refersTo.property) {
    return [{ pointer: '/body/responsibility', detail: 'propertyMaintainer needs a step that refers to the property (refersTo.property: true)' }]
  }
  if (draft.responsibility === 'addressMaintainer' && !draft.refersTo.address) {
    return [{ pointer: '/body/responsibility', detail: 'addressMaintainer needs a step that refers to the address (refersTo.address: true)' }]
  }
  return []
}

/** Run in the transaction that writes the step: it holds the user until then (holdTenantUser). */
async function userErrors(db: DB, tenantId: string, draft: StepDraft): Promise<FieldError[]> {
  if (typeof draft.responsibility === 'string') return []
  const userId = draft.responsibility.user
  if (await holdTenantUser(db, tenantId, userId)) return []
  return [{ pointer: '/body/responsibility/user', detail: `user ${userId} does not exist` }]
}

/** A step with a free target: no service beside it, a URL the SSRF guard lets through (and PHP reads as signed), a strong secret, free parameters. */
function checkTarget(draft: StepDraft, target: Target, { policy, secret }: TargetRequest): ParameterCheck {
  const errors: FieldError[] = []
  if (draft.serviceId !== null) {
    errors.push({ pointer: '/body/target', detail: `a step calls either a marketplace service or a target, not both: set serviceId to null (it is ${draft.serviceId})` })
  }
  // A target is replaced as a whole, secret included: only a target given now meets the PHP rule, a stored one keeps working.
  const urlProblem = webhookUrlProblem(target.url, policy, 'tenant') ??
    (target.delivery === 'query' && secret !== undefined ? queryCallProblem(target.url) : undefined)
  if (urlProblem) errors.push({ pointer: '/body/target/url', detail: urlProblem })
  const weakSecret = secret === undefined ? undefined : secretProblem(secret)
  if (weakSecret) errors.push({ pointer: '/body/target/secret', detail: weakSecret })
  const parameters = validateFreeParameters(draft.parameters)
  return { parameters: parameters.parameters, errors: [...errors, ...parameters.errors] }
}

/**
 * A webhook step needs an active service that the tenant activated, and parameters that match its definitions.
 * Run it in the transaction that writes the step: it keeps the activation locked until then.
 */
async function checkWebhook(
  db: DB, tenantId: string, serviceId: string | null, parameters: Record<string, unknown>, saved?: Record<string, unknown>
): Promise<ParameterCheck> {
  const fail = (detail: string) => ({ parameters, errors: [{ pointer: '/body/serviceId', detail }] })
  if (serviceId === null) return fail('a webhook step needs the serviceId of a marketplace service the tenant activated')
  if (!(await lookup.findActiveService(db, serviceId))) return fail(`service ${serviceId} is not an active marketplace service`)
  if (!(await lookup.lockActivation(db, tenantId, serviceId))) {
    return fail(`service ${serviceId} is not activated for this tenant (PUT /v1/marketplace-services/${serviceId}/activation)`)
  }
  return validateStepParameters(await lookup.findParameterDefinitions(db, serviceId), parameters, saved)
}

/** Why a template with these steps cannot be activated, as errors on /body/active naming each step. */
export async function activationErrors(db: DB, tenantId: string, steps: TemplateStepRow[]): Promise<FieldError[]> {
  if (steps.length === 0) return [{ pointer: '/body/active', detail: 'the template has no steps: add one first' }]
  const errors: FieldError[] = []
  const onActive = (step: TemplateStepRow, found: FieldError[]) => errors.push(...found.map((e) =>
    ({ pointer: '/body/active', detail: `step ${step.position} "${step.name}" (${step.id}): ${e.pointer.replace('/body/', '')} ${e.detail}` })))
  for (const step of steps.filter((s) => s.kind === 'webhook' && s.target_url === null)) {
    // Saved steps: a required parameter with a default added since is no reason to refuse (its calls take the default).
    onActive(step, (await checkWebhook(db, tenantId, step.service_id, step.parameters, step.parameters)).errors)
  }
  // A template a follow-up step names may have been deleted since the step was saved: each process would fail there.
  for (const step of steps.filter((s) => s.kind === 'followUpProcess')) {
    onActive(step, await followUpErrors(db, tenantId, step.template_id, { kind: step.kind, followUp: followUpOf(step) }))
  }
  errors.push(...activationGraphErrors(steps))
  return errors
}
